"""Samplers against closed forms: Gaussian data has an exact score at every t.

Data x0 ~ N(m, s^2) per pixel. Under VE its marginal is N(m, s^2 + sigma(t)^2); under VP it is
N(a m, a^2 s^2 + std(t)^2) with a = exp(log_mean_coeff(t)). So score(x, t) = -(x - a m) / var(t)
with no network, and every sampler must bring its samples back to mean m, std s.
"""

from __future__ import annotations

import math

import pytest
import torch

from drl_engine.sde import VESDE, VPSDE
from drl_engine.samplers import SampleResult, initial_sample, num_steps, sample, time_grid
from drl_engine.spec import SampleSpec

M, S = 0.5, 0.1
SHAPE = (2000, 1, 4, 4)   # 32,000 independent pixels: standard error of mean / std ~ 6e-4 / 4e-4
STEPS = 300
SAMPLERS = ["pc", "euler_maruyama", "ode"]
# |sample mean - m| and |sample std - s|. Measured at these settings over seeds 0-7 the errors
# are at most 0.0013 (pc), 0.0015 (euler_maruyama) and 0.0023 (ode, whose output carries its
# start's sampling error); a score off by a factor of 2 either way moves the std by 0.028 or more
# (see the test below).
TOL = {"pc": 0.005, "euler_maruyama": 0.005, "ode": 0.005}


def _sde(kind: str):
    return VESDE() if kind == "ve" else VPSDE()


def _mean_coeff_and_std(sde, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a(t) and the marginal std sqrt(a^2 s^2 + std(t)^2) of the Gaussian data at time t."""
    a = torch.ones_like(t) if isinstance(sde, VESDE) else torch.exp(sde.log_mean_coeff(t))
    return a, torch.sqrt(a ** 2 * S ** 2 + sde.marginal_std(t) ** 2)


def gaussian_score(sde, factor: float = 1.0):
    """The exact score of the Gaussian data's marginal, times `factor` (1 = correct)."""
    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, std = _mean_coeff_and_std(sde, t)
        return -factor * (x - a.view(-1, 1, 1, 1) * M) / std.view(-1, 1, 1, 1) ** 2
    return score


def _run(sampler: str, sde, seed: int = 0, shape=SHAPE, score_fn=None, **spec) -> SampleResult:
    spec = SampleSpec(sampler=sampler, **{"steps": STEPS, **spec})
    return sample(score_fn or gaussian_score(sde), sde, shape, spec,
                  torch.Generator().manual_seed(seed))


def _moment_errors(images: torch.Tensor) -> tuple[float, float]:
    return abs(images.mean().item() - M), abs(images.std().item() - S)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_samples_match_gaussian_data(kind, sampler):
    result = _run(sampler, _sde(kind))
    mean_err, std_err = _moment_errors(result.images)
    assert mean_err < TOL[sampler], f"mean off by {mean_err:.4f}"
    assert std_err < TOL[sampler], f"std off by {std_err:.4f}"


@pytest.mark.parametrize("factor", [0.5, 2.0])
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_tolerance_catches_a_score_off_by_a_factor_of_two(kind, sampler, factor):
    # A missing 1/2, a doubled g^2 or a halved step all look like this to the sampler.
    sde = _sde(kind)
    # 8,000 pixels are plenty here: the errors sought are ten times the tolerance.
    result = _run(sampler, sde, shape=(500, 1, 4, 4), score_fn=gaussian_score(sde, factor))
    _, std_err = _moment_errors(result.images)
    assert std_err > 2 * TOL[sampler]


@pytest.mark.parametrize("kind, alpha", [
    ("ve", 1.0),
    ("vp", 1.0 - (0.1 + 0.2 * 19.9) * 0.2),   # 1 - beta(t) dt at t = 0.2, dt = 0.2
], ids=["ve", "vp"])
def test_langevin_step_size_follows_the_snr_rule(kind, alpha):
    # A right score leaves any Langevin step size's target alone, so the step is measured
    # directly: one PC step (t = 0.2 straight to 0) with a constant score c, with and without
    # the corrector, from the same start. The predictor maps x to A x + G^2 c with A = 1 - f(1)
    # (f from sde.discretize), so the difference is A (step c + sqrt(2 step) z), of variance
    # 2 A^2 step. Expected: step = 2 alpha (snr ||z|| / ||c||)^2, E||z|| a chi's with d = 16.
    sde, c, d, t = _sde(kind), 1.0, 16, 0.2
    shape = (5000, 1, 4, 4)
    def constant_score(x, t):
        return torch.full_like(x, c)
    with_corrector, without = (
        _run("pc", sde, shape=shape, score_fn=constant_score, steps=5, t_init=t,
             corrector_steps=k).images.double()
        for k in (1, 0))
    f, _ = sde.discretize(torch.ones(1, 1, 1, 1), torch.tensor([t]), t)
    slope = 1.0 - f.item()
    measured = (with_corrector - without).var() / (2 * slope ** 2)
    mean_chi = math.sqrt(2) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
    expected = 2 * alpha * (0.16 * mean_chi / (c * math.sqrt(d))) ** 2
    assert measured.item() == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("sampler", ["pc", "euler_maruyama"])
@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_half_way_start_with_uniform_gaussian_prior_matches(kind, sampler):
    result = _run(sampler, _sde(kind), steps=400, t_init=0.5, prior="uniform_gaussian")
    assert result.steps == 200
    mean_err, std_err = _moment_errors(result.images)
    assert mean_err < TOL[sampler], f"mean off by {mean_err:.4f}"
    assert std_err < TOL[sampler], f"std off by {std_err:.4f}"


def _exact_ode_output(sde, x_init: torch.Tensor, spec: SampleSpec) -> torch.Tensor:
    """Where the probability-flow ODE takes each start, then the final denoising step.

    For Gaussian data the flow is affine,
        x_eps - a_eps m = (x_init - a_init m) std_eps / std_init,
    and the last step is (to within 1e-4 for VP) the posterior mean
        E[x0 | x_eps] = m + a_eps s^2 (x_eps - a_eps m) / std_eps^2.
    """
    a_init, std_init = _mean_coeff_and_std(sde, torch.tensor(spec.t_init, dtype=torch.float64))
    a_eps, std_eps = _mean_coeff_and_std(sde, torch.tensor(spec.eps, dtype=torch.float64))
    return M + (x_init.double() - a_init * M) * a_eps * S ** 2 / (std_eps * std_init)


def _ode_path_error(kind: str, steps: int, t_init: float = 1.0, prior: str = "gaussian") -> float:
    sde = _sde(kind)
    spec = SampleSpec(sampler="ode", steps=steps, t_init=t_init, prior=prior)
    x_init = initial_sample(sde, SHAPE, spec, torch.Generator().manual_seed(0), None)
    images = sample(gaussian_score(sde), sde, SHAPE, spec, torch.Generator().manual_seed(0)).images
    return (images.double() - _exact_ode_output(sde, x_init, spec)).abs().max().item()


@pytest.mark.parametrize("t_init, prior", [(1.0, "gaussian"), (0.5, "uniform_gaussian")])
@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_ode_takes_each_start_where_the_exact_flow_does(kind, t_init, prior):
    # Measured max |error| at 300 steps: 3.3e-4 (VE), 1.3e-4 (VP). From a half-way uniform
    # start the ODE faithfully carries the start's mismatch with the true marginal (it has no
    # noise to forget it), so this, not the moments, is what "still matches" means for it.
    assert _ode_path_error(kind, STEPS, t_init, prior) < 1e-3


@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_ode_is_second_order(kind):
    # Heun: halving the step quarters the error (measured ratio 4.2-4.4); Euler would halve it.
    assert _ode_path_error(kind, 50) / _ode_path_error(kind, 100) > 3.0


@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_a_given_start_is_where_the_flow_begins(kind):
    # The denoising swap starts from a real x_t, not a prior draw: the ODE must carry each
    # given start exactly where the flow takes it (a start ignored or redrawn would not be).
    sde = _sde(kind)
    spec = SampleSpec(sampler="ode", steps=STEPS, t_init=0.5)
    gen = torch.Generator().manual_seed(5)
    x0 = M + S * torch.randn(SHAPE, generator=gen)
    mean, std = sde.marginal_prob(x0, torch.full((SHAPE[0],), 0.5))
    x_t = mean + std.view(-1, 1, 1, 1) * torch.randn(SHAPE, generator=gen)
    images = sample(gaussian_score(sde), sde, SHAPE, spec, torch.Generator().manual_seed(0),
                    x_init=x_t).images
    assert (images.double() - _exact_ode_output(sde, x_t, spec)).abs().max().item() < 1e-3


def test_a_given_start_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"x_init: expected shape \(8, 1, 4, 4\)"):
        sample(gaussian_score(VESDE()), VESDE(), (8, 1, 4, 4), SampleSpec(steps=5),
               x_init=torch.zeros(4, 1, 4, 4))


def test_ode_draws_no_noise_after_the_start():
    sde, spec = VESDE(), SampleSpec(sampler="ode", steps=20)
    after_start = torch.Generator().manual_seed(3)
    initial_sample(sde, (8, 1, 4, 4), spec, after_start, None)
    after_sampling = torch.Generator().manual_seed(3)
    sample(gaussian_score(sde), sde, (8, 1, 4, 4), spec, after_sampling)
    assert torch.equal(after_start.get_state(), after_sampling.get_state())


@pytest.mark.parametrize("sampler", ["pc", "ode"])
def test_last_step_returns_the_noise_free_mean(sampler):
    # Data that is exactly m: the last reverse-diffusion step jumps from eps to 0, so its mean
    # x + sigma(eps)^2 score is m exactly, whatever noise is left in x.
    sde = VESDE()
    def point_mass_score(x, t):
        return -(x - M) / sde.sigma(t).view(-1, 1, 1, 1) ** 2
    result = _run(sampler, sde, shape=(64, 1, 4, 4), score_fn=point_mass_score, steps=50)
    assert torch.allclose(result.images, torch.full_like(result.images, M), atol=1e-5)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_finite_float32_images_of_the_requested_shape(kind, sampler):
    sde = _sde(kind)
    def float64_score(x, t):   # a score in another precision must not leak into the images
        return gaussian_score(sde)(x.double(), t.double())
    shape = (3, 2, 5, 6)
    result = _run(sampler, sde, shape=shape, score_fn=float64_score, steps=20)
    assert result.images.shape == shape
    assert result.images.dtype == torch.float32
    assert torch.isfinite(result.images).all()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_same_seed_same_images_other_seed_other_images(sampler):
    sde = VPSDE()
    first = _run(sampler, sde, seed=7, shape=(4, 1, 4, 4), steps=20).images
    again = _run(sampler, sde, seed=7, shape=(4, 1, 4, 4), steps=20).images
    other = _run(sampler, sde, seed=8, shape=(4, 1, 4, 4), steps=20).images
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("sampler, corrector_steps, nfe_per_step, extra", [
    ("pc", 1, 2, 0),
    ("pc", 0, 1, 0),
    ("pc", 3, 4, 0),
    ("euler_maruyama", 1, 1, 0),
    ("ode", 1, 2, -1),   # Heun's two evaluations per interval, one for the final denoising step
])
@pytest.mark.parametrize("t_init, expected_steps", [(1.0, 40), (0.5, 20)])
def test_nfe_and_steps(sampler, corrector_steps, nfe_per_step, extra, t_init, expected_steps):
    sde = VESDE()
    calls = []
    def counted(x, t):
        calls.append(t)
        return gaussian_score(sde)(x, t)
    result = _run(sampler, sde, shape=(2, 1, 4, 4), score_fn=counted, steps=40, t_init=t_init,
                  corrector_steps=corrector_steps)
    assert result.steps == expected_steps
    assert result.nfe == nfe_per_step * expected_steps + extra == len(calls)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_score_is_asked_only_on_the_grid(sampler):
    spec = SampleSpec(sampler=sampler, steps=10, t_init=0.6)
    grid = time_grid(spec)
    seen = []
    def recording(x, t):
        assert t.shape == (x.shape[0],) and t.dtype == torch.float32
        assert torch.all(t == t[0])
        seen.append(t[0].item())
        return gaussian_score(VESDE())(x, t)
    sample(recording, VESDE(), (2, 1, 4, 4), spec, torch.Generator().manual_seed(0))
    assert set(seen) == set(grid.tolist())   # t_init ... eps, never below eps
    assert seen[0] == pytest.approx(0.6) and seen[-1] == pytest.approx(spec.eps)


def test_time_grid_is_even_from_t_init_to_eps():
    grid = time_grid(SampleSpec(steps=1000, t_init=0.7))
    assert len(grid) == 700
    assert grid[0].item() == pytest.approx(0.7) and grid[-1].item() == pytest.approx(1e-3)
    gaps = grid[:-1] - grid[1:]
    assert torch.allclose(gaps, torch.full_like(gaps, (0.7 - 1e-3) / 699), rtol=1e-3)


@pytest.mark.parametrize("steps, t_init, expected", [
    (1000, 1.0, 1000), (1000, 0.7, 700), (1000, 0.5, 500), (5, 0.5, 3), (1000, 1e-4, 1),
])
def test_num_steps(steps, t_init, expected):
    assert num_steps(SampleSpec(steps=steps, t_init=t_init)) == expected


def test_progress_reports_every_step():
    seen = []
    spec = SampleSpec(sampler="euler_maruyama", steps=12, t_init=0.5)
    sample(gaussian_score(VESDE()), VESDE(), (2, 1, 4, 4), spec, torch.Generator().manual_seed(0),
           progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 6) for i in range(1, 7)]


@pytest.mark.parametrize("kind, t_init", [("ve", 1.0), ("ve", 0.4), ("vp", 1.0), ("vp", 0.4)])
def test_gaussian_prior_start(kind, t_init):
    sde = _sde(kind)
    x = initial_sample(sde, (4000, 1, 4, 4), SampleSpec(t_init=t_init),
                       torch.Generator().manual_seed(0), None)
    expected_std = sde.sigma(torch.tensor(t_init)).item() if kind == "ve" else 1.0
    assert x.shape == (4000, 1, 4, 4) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 0.03 * expected_std
    assert x.std().item() == pytest.approx(expected_std, rel=0.02)


@pytest.mark.parametrize("kind, t_init", [("ve", 0.5), ("ve", 0.2), ("vp", 0.5), ("vp", 0.2)])
def test_uniform_gaussian_prior_start(kind, t_init):
    # u ~ U(lo, hi) pushed through the marginal: mean a (lo + hi) / 2, variance
    # a^2 (hi - lo)^2 / 12 + std(t)^2.
    sde = _sde(kind)
    lo, hi = sde.data_range
    x = initial_sample(sde, (4000, 1, 4, 4), SampleSpec(t_init=t_init, prior="uniform_gaussian"),
                       torch.Generator().manual_seed(0), None)
    t = torch.tensor(t_init)
    a = 1.0 if kind == "ve" else torch.exp(sde.log_mean_coeff(t)).item()
    std = sde.marginal_std(t).item()
    expected_std = (a ** 2 * (hi - lo) ** 2 / 12 + std ** 2) ** 0.5
    assert x.mean().item() == pytest.approx(a * (lo + hi) / 2, abs=0.03 * expected_std)
    assert x.std().item() == pytest.approx(expected_std, rel=0.02)
    assert x.min().item() < a * lo and x.max().item() > a * hi   # the noise reaches past the range


def test_t_init_at_or_below_eps_is_refused():
    spec = SampleSpec(t_init=1e-3, eps=1e-3)
    with pytest.raises(ValueError, match=r"sample\.t_init"):
        sample(gaussian_score(VESDE()), VESDE(), (2, 1, 4, 4), spec)


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="shape"):
        sample(gaussian_score(VESDE()), VESDE(), (0, 1, 4, 4), SampleSpec(steps=4))


def test_score_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="score_fn.*shape"):
        sample(lambda x, t: x[:, :1, :2], VESDE(), (2, 1, 4, 4), SampleSpec(steps=4))
