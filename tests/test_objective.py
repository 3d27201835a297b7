"""The DRL objective against closed forms (DESIGN.md section 1, "Objective", "Choice of t").

The model here is `KernelScoreOracle`, a small nn.Module with DRLModel's interface whose code
is x0 itself and whose score is the exact score of the perturbation kernel
N(x_t; mean(t) x0, std(t)^2 I). With it the DSM term is zero, so the loss must equal the
penalty term to the last digit. The real DRLModel is exercised by the smoke test at the end.
"""

import math

import pytest
import torch
from torch import nn

from drl_engine.objective import (
    dsm_loss_per_sample,
    drl_loss,
    kl_to_standard_normal,
    l1_penalty,
    reparameterize,
    sample_t,
)
from drl_engine.sde import VESDE, VPSDE
from drl_engine.spec import ObjectiveSpec, SpecError, parse_spec

SDES = [VESDE(), VPSDE()]
SDE_IDS = ["ve", "vp"]


class KernelScoreOracle(nn.Module):
    """DRLModel's interface with z = x0 (times a learnable scale, 1 at init) and the exact kernel score.

    score(x_t, t, z) = -(x_t - mean(t) z) / std(t)^2, which is -eps / std(t) when z = x0.
    A time-conditioned oracle appends the encoder's t to the code and its score uses that t,
    so the DSM term is zero only if the encoder and the score network saw the same t.
    A variational oracle returns a constant log-variance.
    """

    def __init__(self, sde, variational: bool = False, time_conditioned: bool = False,
                 logvar: float = -40.0):
        super().__init__()
        self.sde = sde
        self.variational = variational
        self.parameterization = "score"
        self.time_conditioned = time_conditioned
        self.logvar = logvar
        self.scale = nn.Parameter(torch.ones((), dtype=torch.float64))

    def encoder_output(self, x0, t):
        mean = x0.flatten(1) * self.scale
        if self.time_conditioned:
            mean = torch.cat([mean, t[:, None]], dim=1)
        logvar = torch.full_like(mean, self.logvar) if self.variational else None
        return mean, logvar

    def score(self, xt, t, z):
        if self.time_conditioned:
            z, t = z[:, :-1], z[:, -1]
        mean, std = self.sde.marginal_prob(z.reshape(xt.shape), t)
        return -(xt - mean) / std.view(-1, 1, 1, 1) ** 2


def batch(seed: int = 0, n: int = 6, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(n, 1, 4, 4, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def ks_statistic_uniform(samples: torch.Tensor, lo: float, hi: float) -> float:
    """Kolmogorov-Smirnov distance between the samples' empirical CDF and U(lo, hi)."""
    u = ((samples.double() - lo) / (hi - lo)).sort().values
    n = u.numel()
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max((i / n - u).max().item(), (u - (i - 1) / n).max().item())


# --- the DSM target --------------------------------------------------------------------------

@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_dsm_target_is_the_score_of_the_perturbation_kernel(sde):
    gen = torch.Generator().manual_seed(1)
    x0 = batch()
    t = torch.rand(x0.shape[0], dtype=torch.float64, generator=gen) * 0.99 + 0.01
    eps = torch.randn(x0.shape, dtype=torch.float64, generator=gen)
    mean, std = sde.marginal_prob(x0, t)
    std4 = std.view(-1, 1, 1, 1)
    xt = (mean + std4 * eps).requires_grad_(True)
    log_kernel = torch.distributions.Normal(mean, std4.expand_as(mean)).log_prob(xt).sum()
    (kernel_score,) = torch.autograd.grad(log_kernel, xt)
    torch.testing.assert_close(kernel_score, -eps / std4, rtol=1e-10, atol=1e-10)

    # The exact target scores zero; the zero score pays ||eps||^2 (lambda(t) = std^2 cancels 1/std^2).
    zero = dsm_loss_per_sample(kernel_score, eps, std)
    assert zero.shape == (x0.shape[0],)
    assert zero.max().item() < 1e-12
    torch.testing.assert_close(dsm_loss_per_sample(torch.zeros_like(eps), eps, std),
                               eps.pow(2).flatten(1).sum(1))


def test_dsm_loss_is_lambda_weighted_squared_error_to_the_target():
    gen = torch.Generator().manual_seed(2)
    score = torch.randn(4, 2, 3, 3, dtype=torch.float64, generator=gen)
    eps = torch.randn(4, 2, 3, 3, dtype=torch.float64, generator=gen)
    std = torch.tensor([0.01, 0.3, 1.0, 50.0], dtype=torch.float64)
    target = -eps / std.view(-1, 1, 1, 1)
    want = std ** 2 * (score - target).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(dsm_loss_per_sample(score, eps, std), want, rtol=1e-10, atol=1e-10)


# --- choice of t -----------------------------------------------------------------------------

@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_uniform_t_lies_in_range_with_the_uniform_distribution(sde):
    spec = ObjectiveSpec(t_sampling="uniform", t_eps=0.2)
    t = sample_t(20_000, spec, sde, torch.Generator().manual_seed(3), "cpu")
    assert t.shape == (20_000,) and t.dtype == torch.float32
    assert t.min().item() >= 0.2 and t.max().item() <= 1.0
    assert t.mean().item() == pytest.approx(0.6, abs=5 * 0.8 / math.sqrt(12 * 20_000))
    assert ks_statistic_uniform(t, 0.2, 1.0) < 1.63 / math.sqrt(20_000)   # KS at alpha = 0.01


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_sigma_uniform_makes_std_uniform(sde):
    spec = ObjectiveSpec(t_sampling="sigma_uniform")
    n = 20_000
    t = sample_t(n, spec, sde, torch.Generator().manual_seed(4), "cpu", dtype=torch.float64)
    assert t.min().item() >= spec.t_eps and t.max().item() <= 1.0
    lo = sde.marginal_std(torch.tensor(spec.t_eps, dtype=torch.float64)).item()
    hi = sde.marginal_std(torch.tensor(1.0, dtype=torch.float64)).item()
    std = sde.marginal_std(t)
    assert std.mean().item() == pytest.approx((lo + hi) / 2, abs=5 * (hi - lo) / math.sqrt(12 * n))
    assert std.var().item() == pytest.approx((hi - lo) ** 2 / 12, rel=0.05)
    assert ks_statistic_uniform(std, lo, hi) < 1.63 / math.sqrt(n)


def test_sigma_uniform_on_ve_is_sigma_uniform_between_sigma_min_and_sigma_max():
    # DESIGN: sigma ~ U(sigma_min, sigma_max). Half the draws have sigma above 25, i.e.
    # t above ln(2500) / ln(5000) ~ 0.918: the "high-noise focus".
    spec = ObjectiveSpec(t_sampling="sigma_uniform")
    t = sample_t(20_000, spec, VESDE(), torch.Generator().manual_seed(5), "cpu")
    sigma = VESDE().sigma(t)
    assert sigma.min().item() >= 0.01 and sigma.max().item() <= 50.0 * (1 + 1e-6)
    assert t.median().item() == pytest.approx(math.log(2500) / math.log(5000), abs=5e-3)


def test_fixed_t_is_constant_and_needs_no_randomness():
    spec = ObjectiveSpec(t_sampling="fixed", t_fixed=0.35)
    t = sample_t(7, spec, VESDE(), None, "cpu", dtype=torch.float64)
    assert torch.equal(t, torch.full((7,), 0.35, dtype=torch.float64))


def test_fixed_without_t_fixed_is_a_spec_error_naming_the_field():
    with pytest.raises(SpecError, match=r"objective\.t_fixed"):
        parse_spec({"objective": {"t_sampling": "fixed"}})


@pytest.mark.parametrize("how", ["uniform", "sigma_uniform"])
def test_sample_t_is_reproducible_with_a_seeded_generator(how):
    spec = ObjectiveSpec(t_sampling=how)
    a = sample_t(100, spec, VPSDE(), torch.Generator().manual_seed(6), "cpu")
    b = sample_t(100, spec, VPSDE(), torch.Generator().manual_seed(6), "cpu")
    c = sample_t(100, spec, VPSDE(), torch.Generator().manual_seed(7), "cpu")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# --- code penalties --------------------------------------------------------------------------

def test_l1_penalty_sums_absolute_values_per_sample():
    z = torch.tensor([[1.0, -2.0, 3.0], [0.0, -0.5, 0.0]])
    torch.testing.assert_close(l1_penalty(z), torch.tensor([6.0, 0.5]))
    assert l1_penalty(torch.ones(3, 2, 4, 4)).tolist() == [32.0, 32.0, 32.0]


def test_kl_to_standard_normal_matches_monte_carlo_and_torch():
    gen = torch.Generator().manual_seed(8)
    mean = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    logvar = torch.randn(3, 4, dtype=torch.float64, generator=gen) * 0.5
    kl = kl_to_standard_normal(mean, logvar)

    q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p).sum(1), rtol=1e-10, atol=1e-12)

    n = 100_000
    z = reparameterize(mean.expand(n, 3, 4), logvar.expand(n, 3, 4), gen)
    log_ratio = (q.log_prob(z) - p.log_prob(z)).sum(-1)          # (n, 3)
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    assert torch.all((estimate - kl).abs() < 5 * stderr), (estimate, kl, stderr)

    assert kl_to_standard_normal(torch.zeros(2, 5), torch.zeros(2, 5)).tolist() == [0.0, 0.0]


def test_reparameterize_draws_from_the_gaussian_and_is_differentiable():
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64).expand(50_000, 2).clone().requires_grad_(True)
    logvar = torch.log(torch.tensor([0.25, 4.0], dtype=torch.float64)).expand(50_000, 2)
    z = reparameterize(mean, logvar, torch.Generator().manual_seed(9))
    torch.testing.assert_close(z.mean(0).detach(), torch.tensor([1.0, -2.0], dtype=torch.float64),
                               atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0).detach(), torch.tensor([0.5, 2.0], dtype=torch.float64),
                               atol=0, rtol=0.02)
    (grad,) = torch.autograd.grad(z.sum(), mean)
    assert torch.equal(grad, torch.ones_like(grad))
    again = reparameterize(mean, logvar, torch.Generator().manual_seed(9))
    assert torch.equal(z, again)


# --- drl_loss --------------------------------------------------------------------------------

@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_drl_loss_with_the_exact_score_is_the_l1_penalty(sde):
    x0 = batch()
    spec = ObjectiveSpec(l1_weight=0.5)
    loss, parts = drl_loss(KernelScoreOracle(sde), x0, spec, torch.Generator().manual_seed(10))
    assert loss.shape == () and loss.requires_grad
    assert set(parts) == {"dsm", "penalty", "loss"} and all(type(v) is float for v in parts.values())
    l1 = x0.flatten(1).abs().sum(1).mean().item()
    assert parts["dsm"] < 1e-12
    assert parts["penalty"] == pytest.approx(l1, rel=1e-12)
    assert loss.item() == pytest.approx(parts["dsm"] + 0.5 * l1, rel=1e-12)
    assert parts["loss"] == loss.item()


def test_drl_loss_gradient_reaches_the_encoder():
    # At scale = 1 the oracle's DSM term is at its minimum (zero), so the only gradient on
    # the encoder's scale is the L1 term's: d/ds [w * mean ||s x0||_1] = w * mean ||x0||_1.
    x0 = batch()
    model = KernelScoreOracle(VESDE())
    loss, parts = drl_loss(model, x0, ObjectiveSpec(l1_weight=0.25), torch.Generator().manual_seed(11))
    loss.backward()
    assert model.scale.grad.item() == pytest.approx(0.25 * parts["penalty"], rel=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_vdrl_loss_adds_the_weighted_kl_of_the_code(sde):
    x0 = batch()
    model = KernelScoreOracle(sde, variational=True, logvar=0.0)
    # KL(N(x0, I) || N(0, I)) = ||x0||^2 / 2 per sample.
    kl = 0.5 * x0.flatten(1).pow(2).sum(1).mean().item()
    losses = {}
    for weight in (0.0, 0.3):
        spec = ObjectiveSpec(kl_weight=weight, l1_weight=123.0)   # l1_weight must not matter
        loss, parts = drl_loss(model, x0, spec, torch.Generator().manual_seed(12))
        assert parts["penalty"] == pytest.approx(kl, rel=1e-12)
        assert loss.item() == pytest.approx(parts["dsm"] + weight * kl, rel=1e-12)
        losses[weight] = (loss.item(), parts["dsm"])
    # Same seed, same draws: the weight changes the loss by exactly weight * KL and nothing else.
    assert losses[0.3][1] == losses[0.0][1]
    assert losses[0.3][0] - losses[0.0][0] == pytest.approx(0.3 * kl, rel=1e-9)
    # z is a draw from N(x0, I), not x0, so the exact-kernel oracle no longer scores zero.
    assert losses[0.0][1] > 1.0


def test_vdrl_with_a_near_zero_variance_code_recovers_the_exact_score():
    model = KernelScoreOracle(VESDE(), variational=True, logvar=-40.0)
    _, parts = drl_loss(model, batch(), ObjectiveSpec(), torch.Generator().manual_seed(13))
    assert parts["dsm"] < 1e-8


def test_time_conditioned_encoder_sees_the_same_t_as_the_score():
    model = KernelScoreOracle(VPSDE(), time_conditioned=True)
    for how in ("uniform", "sigma_uniform"):
        _, parts = drl_loss(model, batch(), ObjectiveSpec(t_sampling=how),
                            torch.Generator().manual_seed(14))
        assert parts["dsm"] < 1e-12


def test_drl_loss_is_reproducible_with_a_seeded_generator():
    model = KernelScoreOracle(VESDE(), variational=True, logvar=-1.0)
    x0 = batch()
    a = drl_loss(model, x0, ObjectiveSpec(), torch.Generator().manual_seed(15))
    b = drl_loss(model, x0, ObjectiveSpec(), torch.Generator().manual_seed(15))
    c = drl_loss(model, x0, ObjectiveSpec(), torch.Generator().manual_seed(16))
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert a[1]["dsm"] != c[1]["dsm"]


def test_variational_model_without_logvar_is_refused():
    class NoLogvar(KernelScoreOracle):
        def encoder_output(self, x0, t):
            return super().encoder_output(x0, t)[0], None

    with pytest.raises(ValueError, match="logvar"):
        drl_loss(NoLogvar(VESDE(), variational=True), batch(), ObjectiveSpec())


# --- the real model --------------------------------------------------------------------------

@pytest.mark.parametrize("kind,encoder,sde_kind", [("drl", "static", "ve"),
                                                   ("vdrl", "time_conditioned", "vp")])
def test_real_drl_model_trains_on_a_tiny_fixed_batch(kind, encoder, sde_kind):
    model_module = pytest.importorskip("drl_engine.model")
    spec = parse_spec({
        "model": {"kind": kind, "encoder": encoder, "latent_dim": 4, "base_channels": 8,
                  "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
                  "dropout": 0.0},
        "sde": {"kind": sde_kind},
        "objective": {"t_sampling": "fixed", "t_fixed": 0.5},
    })
    torch.manual_seed(0)
    model = model_module.DRLModel(spec, image_shape=(1, 16, 16))
    lo, hi = model.sde.data_range
    x0 = lo + (hi - lo) * torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(17))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def loss_at_fixed_draws():
        # A fixed t and a fixed seed give the same noise every call, so the loss is a
        # deterministic function of the weights and must go down under Adam.
        return drl_loss(model, x0, spec.objective, torch.Generator().manual_seed(18))

    first, parts = loss_at_fixed_draws()
    assert torch.isfinite(first) and parts["dsm"] > 0
    for _ in range(4):
        optimizer.zero_grad()
        loss, _ = loss_at_fixed_draws()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        last, _ = loss_at_fixed_draws()
    assert last.item() < 0.8 * first.item()
