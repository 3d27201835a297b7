"""The forward SDEs against their closed forms (DESIGN.md section 1, "SDEs").

Reference values are computed here in float64 from the formulas in DESIGN.md, not from the
code under test, so a wrong constant or sign in drl_engine/sde.py fails.
"""

import math

import pytest
import torch

from drl_engine.sde import VESDE, VPSDE, build_sde
from drl_engine.spec import SDESpec

T_GRID = [0.0, 1e-5, 0.1, 0.37, 0.5, 0.9, 1.0]


def ve_sigma_reference(t: float, sigma_min: float = 0.01, sigma_max: float = 50.0) -> float:
    return sigma_min * (sigma_max / sigma_min) ** t


def vp_log_mean_coeff_reference(t: float, beta_min: float = 0.1, beta_max: float = 20.0) -> float:
    return -t * t * (beta_max - beta_min) / 4 - t * beta_min / 2


def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# --- marginals -------------------------------------------------------------------------------

def test_ve_marginal_matches_closed_form():
    sde = VESDE()
    t = f64(T_GRID)
    x0 = torch.randn(len(T_GRID), 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mean, std = sde.marginal_prob(x0, t)
    assert torch.equal(mean, x0)
    assert std.shape == (len(T_GRID),)
    torch.testing.assert_close(std, f64([ve_sigma_reference(s) for s in T_GRID]), rtol=1e-12, atol=0)
    assert std[0].item() == pytest.approx(0.01, rel=1e-12)
    assert std[-1].item() == pytest.approx(50.0, rel=1e-12)


def test_vp_marginal_matches_closed_form():
    sde = VPSDE()
    t = f64(T_GRID)
    x0 = torch.randn(len(T_GRID), 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mean, std = sde.marginal_prob(x0, t)
    coeff = f64([math.exp(vp_log_mean_coeff_reference(s)) for s in T_GRID])
    torch.testing.assert_close(mean, coeff.view(-1, 1, 1, 1) * x0, rtol=1e-12, atol=0)
    torch.testing.assert_close(std, torch.sqrt(1 - coeff ** 2), rtol=1e-10, atol=1e-300)
    assert coeff[-1].item() == pytest.approx(math.exp(-(20 - 0.1) / 4 - 0.05), rel=1e-12)
    assert std[-1].item() == pytest.approx(1.0, abs=1e-4)
    assert std[0].item() == 0.0


@pytest.mark.parametrize("sde", [VESDE(), VPSDE()], ids=["ve", "vp"])
@pytest.mark.parametrize("t_value", [0.05, 0.5, 1.0])
def test_empirical_moments_of_xt_match_closed_form(sde, t_value):
    n = 20_000
    x0_value = 0.7
    x0 = torch.full((n, 1), x0_value, dtype=torch.float64)
    t = torch.full((n,), t_value, dtype=torch.float64)
    mean, std = sde.marginal_prob(x0, t)
    eps = torch.randn(n, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    xt = mean + std[:, None] * eps
    if isinstance(sde, VESDE):
        want_mean, want_std = x0_value, ve_sigma_reference(t_value)
    else:
        lmc = vp_log_mean_coeff_reference(t_value)
        want_mean, want_std = math.exp(lmc) * x0_value, math.sqrt(1 - math.exp(2 * lmc))
    # 5 standard errors of the sample mean / sample std.
    assert xt.mean().item() == pytest.approx(want_mean, abs=5 * want_std / math.sqrt(n))
    assert xt.std().item() == pytest.approx(want_std, rel=5 / math.sqrt(2 * n))


@pytest.mark.parametrize("sde", [VESDE(), VPSDE(), VESDE(0.1, 20.0), VPSDE(0.5, 10.0)],
                         ids=["ve", "vp", "ve-custom", "vp-custom"])
def test_t_from_std_inverts_marginal_std(sde):
    t = torch.linspace(1e-3, 1.0, 101, dtype=torch.float64)
    torch.testing.assert_close(sde.t_from_std(sde.marginal_std(t)), t, rtol=1e-9, atol=1e-9)


# --- forward SDE -----------------------------------------------------------------------------

def test_ve_diffusion_squared_is_derivative_of_variance():
    sde = VESDE()
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    dvar_dt = (sde.marginal_std(t + h) ** 2 - sde.marginal_std(t - h) ** 2) / (2 * h)
    x = torch.randn(19, 1, 2, 2, dtype=torch.float64)
    drift, g = sde.sde(x, t)
    assert torch.equal(drift, torch.zeros_like(x))
    torch.testing.assert_close(g ** 2, dvar_dt, rtol=1e-7, atol=0)
    want_g = f64([ve_sigma_reference(s) for s in t.tolist()]) * math.sqrt(2 * math.log(50 / 0.01))
    torch.testing.assert_close(g, want_g, rtol=1e-12, atol=0)


def test_vp_marginal_variance_solves_the_variance_ode():
    # For x0 = 0 the forward SDE dx = -beta x / 2 dt + sqrt(beta) dw has variance v(t) with
    # dv/dt = -beta(t) v + beta(t), v(0) = 0.
    sde = VPSDE()
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    var = lambda s: sde.marginal_prob(torch.zeros(s.shape[0], 1), s)[1] ** 2  # noqa: E731
    dvar_dt = (var(t + h) - var(t - h)) / (2 * h)
    beta = 0.1 + t * (20.0 - 0.1)
    torch.testing.assert_close(dvar_dt, -beta * var(t) + beta, rtol=1e-6, atol=1e-8)

    x = torch.randn(19, 3, dtype=torch.float64)
    drift, g = sde.sde(x, t)
    torch.testing.assert_close(drift, -0.5 * beta[:, None] * x, rtol=1e-12, atol=0)
    torch.testing.assert_close(g, beta.sqrt(), rtol=1e-12, atol=0)


# --- discretisation --------------------------------------------------------------------------

def test_ve_discretize_variances_add_up_exactly():
    # N reverse steps from t = 1 down to t_end: sum_i G_i^2 = sigma(1)^2 - sigma(t_end)^2.
    sde = VESDE()
    n, t_end = 250, 0.3
    dt = (1.0 - t_end) / n
    t = 1.0 - dt * torch.arange(n, dtype=torch.float64)
    x = torch.randn(n, 1, 2, 2, dtype=torch.float64)
    f, g = sde.discretize(x, t, dt)
    assert torch.equal(f, torch.zeros_like(x))
    want = ve_sigma_reference(1.0) ** 2 - ve_sigma_reference(t_end) ** 2
    assert (g ** 2).sum().item() == pytest.approx(want, rel=1e-9)


def test_ve_discretize_last_step_into_t0_removes_all_noise():
    sde = VESDE()
    t = f64([0.25])
    _, g = sde.discretize(torch.zeros(1, 1), t, 0.25)
    assert g.item() == pytest.approx(ve_sigma_reference(0.25), rel=1e-12)


def test_vp_discretize_preserves_unit_variance_and_matches_the_marginal():
    sde = VPSDE()
    n = 10_000
    dt = 1.0 / n
    t = 1.0 - dt * torch.arange(n, dtype=torch.float64)
    x = torch.ones(n, 1, dtype=torch.float64)
    f, g = sde.discretize(x, t, dt)
    keep = (1.0 + f[:, 0])     # x_{i+1} = keep_i x_i + G_i z is the DDPM forward step
    # Each DDPM step maps unit variance to unit variance: keep^2 + G^2 = 1 exactly.
    torch.testing.assert_close(keep ** 2 + g ** 2, torch.ones(n, dtype=torch.float64), rtol=1e-12, atol=0)
    # Chained over [0, 1] the kept fraction approaches the continuous mean coefficient.
    assert torch.prod(keep).item() == pytest.approx(math.exp(vp_log_mean_coeff_reference(1.0)), rel=2e-2)


# --- prior, network-facing maps, factory -----------------------------------------------------

@pytest.mark.parametrize("sde,want_std", [(VESDE(), 50.0), (VPSDE(), 1.0)], ids=["ve", "vp"])
def test_prior_sampling_has_the_prior_std_and_is_seeded(sde, want_std):
    shape = (64, 1, 16, 16)
    a = sde.prior_sampling(shape, generator=torch.Generator().manual_seed(3))
    b = sde.prior_sampling(shape, generator=torch.Generator().manual_seed(3))
    assert a.shape == shape
    assert torch.equal(a, b)
    n = a.numel()
    assert a.mean().item() == pytest.approx(0.0, abs=5 * want_std / math.sqrt(n))
    assert a.std().item() == pytest.approx(want_std, rel=5 / math.sqrt(2 * n))
    assert sde.prior_std(1.0).item() == pytest.approx(want_std, rel=1e-6)


@pytest.mark.parametrize("sde,prior_std", [(VESDE(), 50.0), (VPSDE(), 1.0)], ids=["ve", "vp"])
def test_prior_logp_is_the_gaussian_log_density(sde, prior_std):
    z = torch.randn(5, 1, 3, 3, dtype=torch.float64) * prior_std
    scale = torch.tensor(prior_std, dtype=torch.float64)
    want = torch.distributions.Normal(torch.zeros_like(scale), scale).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), want, rtol=1e-10, atol=1e-10)


def test_score_from_output_and_noise_condition():
    t = f64([0.1, 0.5, 1.0])
    out = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    ve, vp = VESDE(), VPSDE()
    sigma = f64([ve_sigma_reference(s) for s in t.tolist()])
    torch.testing.assert_close(ve.score_from_output(out, t), out / sigma.view(-1, 1, 1, 1))
    torch.testing.assert_close(ve.noise_condition(t), sigma.log())
    std = vp.marginal_std(t)
    torch.testing.assert_close(vp.score_from_output(out, t), -out / std.view(-1, 1, 1, 1))
    torch.testing.assert_close(vp.noise_condition(t), 999.0 * t)


def test_build_sde_follows_the_spec():
    ve = build_sde(SDESpec())
    assert isinstance(ve, VESDE) and (ve.sigma_min, ve.sigma_max) == (0.01, 50.0)
    assert ve.data_range == (0.0, 1.0)
    vp = build_sde(SDESpec(kind="vp", beta_min=0.2, beta_max=10.0))
    assert isinstance(vp, VPSDE) and (vp.beta_min, vp.beta_max) == (0.2, 10.0)
    assert vp.data_range == (-1.0, 1.0)
    custom = build_sde(SDESpec(sigma_min=0.1, sigma_max=20.0))
    assert custom.marginal_std(torch.tensor(1.0, dtype=torch.float64)).item() == pytest.approx(20.0)
