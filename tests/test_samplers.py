"""Samplers against closed forms: Gaussian data has an exact score at every t.

Data x0 ~ N(m, s^2) per pixel. Under VE its marginal is N(m, s^2 + sigma(t)^2); under VP it is
N(a m, a^2 s^2 + std(t)^2) with a = exp(log_mean_coeff(t)). So score(x, t) = -(x - a m) / var(t)
with no network, and every sampler must bring its samples back to mean m, std s.

From a start that is not the marginal at t_init (a prior at t_init < 1) the exact answer is
still known: the exact reverse SDE moves x_{t_init} through the true posterior p(x_eps | x_t)
whatever the start, and the probability-flow ODE is affine (`_exact_flow_output`); every sampler
then ends with (about) the posterior mean E[x0 | x_eps], which is linear in x_eps.
"""

from __future__ import annotations

import math
import typing

import pytest
import torch

from drl_engine import samplers as samplers_facade
from drl_engine.sampling import SAMPLERS, SampleResult, initial_sample, num_steps, sample, time_grid
from drl_engine.sampling import ode_adaptive
from drl_engine.sampling.dpm_solver_pp import DPMSolverPlusPlus2M
from drl_engine.sampling.edm_schedule import RHO, karras_sigmas
from drl_engine.sampling.score import CountedScore
from drl_engine.sde import VESDE, VPSDE
from drl_engine.spec import SampleSpec, SamplerName, SpecError, parse_spec

M, S = 0.5, 0.1
SHAPE = (2000, 1, 4, 4)   # 32,000 independent pixels: standard error of mean / std ~ 6e-4 / 4e-4
SAMPLER_NAMES = list(typing.get_args(SamplerName))
STOCHASTIC = [name for name in SAMPLER_NAMES if SAMPLERS[name].stochastic]
DETERMINISTIC = [name for name in SAMPLER_NAMES if not SAMPLERS[name].stochastic]
FIXED_STEP = [name for name in SAMPLER_NAMES if name != "ode_adaptive"]
# Each sampler's stated setting: the spec fields at which it meets TOL on this data, and its
# network evaluations at t_init = 1 (ode_adaptive's are counted, dopri5 at rtol = atol = 1e-5,
# the defaults: 105 for VE, 93-105 for VP over seeds 0-3; the stated number is its budget).
STATED = {"pc": {"steps": 300}, "euler_maruyama": {"steps": 300}, "ode": {"steps": 300},
          "heun": {"steps": 50}, "dpm_solver_pp": {"steps": 50}, "ode_adaptive": {}}
STATED_NFE = {"pc": 600, "euler_maruyama": 300, "ode": 599, "heun": 99, "dpm_solver_pp": 50,
              "ode_adaptive": 105}
# |sample mean - expected| and |sample std - expected|. Measured at the stated settings over
# seeds 0-3 and both SDEs: against the data (t_init = 1) at most 0.0006 (pc), 0.0014
# (euler_maruyama) and 0.0023 (ode, heun, dpm_solver_pp, ode_adaptive: a deterministic sampler's
# output carries its start's sampling error); against the exact answer from all four starts at
# most 0.0021 (pc's predictor), 0.0019, 0.0001, 0.0011, 0.0010 and 0.00003. A score off by a
# factor of 2 either way moves the std by 0.030 or more (see the test below).
TOL = 0.005
# Max |x - exact flow| per pixel for the deterministic samplers at their stated settings,
# measured (seeds 0-3, all starts, both SDEs): ode 3.3e-4, heun 4.8e-3, dpm_solver_pp 4.3e-3,
# ode_adaptive 3.5e-5 (its dopri5 tolerances are 1e-5).
PATH_TOL = {"ode": 1e-3, "heun": 1e-2, "dpm_solver_pp": 1e-2, "ode_adaptive": 1e-4}
STARTS = [(1.0, "gaussian"), (1.0, "uniform_gaussian"), (0.5, "gaussian"),
          (0.5, "uniform_gaussian")]


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


def _spec(sampler: str, **fields) -> SampleSpec:
    return SampleSpec(sampler=sampler, **{**STATED[sampler], **fields})


def _run(sampler: str, sde, seed: int = 0, shape=SHAPE, score_fn=None, **fields) -> SampleResult:
    return sample(score_fn or gaussian_score(sde), sde, shape, _spec(sampler, **fields),
                  torch.Generator().manual_seed(seed))


def _moment_errors(images: torch.Tensor) -> tuple[float, float]:
    return abs(images.mean().item() - M), abs(images.std().item() - S)


def _at(sde, t: float) -> tuple[float, float]:
    a, std = _mean_coeff_and_std(sde, torch.tensor(t, dtype=torch.float64))
    return a.item(), std.item()


def _exact_flow_output(sde, x_init: torch.Tensor, spec: SampleSpec) -> torch.Tensor:
    """Where the probability-flow ODE takes each start, then the final denoising step.

    For Gaussian data the flow is affine,
        x_eps - a_eps m = (x_init - a_init m) std_eps / std_init,
    and the last step is (to within 1e-4 for VP) the posterior mean
        E[x0 | x_eps] = m + a_eps s^2 (x_eps - a_eps m) / std_eps^2.
    """
    a_init, std_init = _at(sde, spec.t_init)
    a_eps, std_eps = _at(sde, spec.eps)
    return M + (x_init.double() - a_init * M) * a_eps * S ** 2 / (std_eps * std_init)


def _expected_moments(sampler: str, sde, x_init: torch.Tensor,
                      spec: SampleSpec) -> tuple[float, float]:
    """Mean and std of the exact sampler's output from these starts.

    Deterministic: those of `_exact_flow_output`. Stochastic: the exact reverse SDE draws
    x_eps ~ p(x_eps | x_init) (its kernels are the true posteriors whatever the start), and
    the output is T(x_eps) = m + k_eps (x_eps - a_eps m), k_eps = a_eps s^2 / v_eps, so
        mean = m + k (E x_init - a_init m),   k = a_init s^2 / v_init
        var  = k^2 Var x_init + k_eps^2 (v_eps - (a_init / a_eps)^2 v_eps^2 / v_init)
    with v = a^2 s^2 + std^2 the marginal variance.
    """
    if not SAMPLERS[sampler].stochastic:
        exact = _exact_flow_output(sde, x_init, spec)
        return exact.mean().item(), exact.std().item()
    (a_i, std_i), (a_e, std_e) = _at(sde, spec.t_init), _at(sde, spec.eps)
    v_i, v_e = std_i ** 2, std_e ** 2
    k, k_eps = a_i * S ** 2 / v_i, a_e * S ** 2 / v_e
    x = x_init.double()
    mean = M + k * (x.mean().item() - a_i * M)
    var = k ** 2 * x.var().item() + k_eps ** 2 * (v_e - (a_i / a_e) ** 2 * v_e ** 2 / v_i)
    return mean, math.sqrt(var)


def _start_and_output(sampler: str, kind: str, seed: int = 0, shape=SHAPE, **fields):
    sde, spec = _sde(kind), _spec(sampler, **fields)
    x_init = initial_sample(sde, shape, spec, torch.Generator().manual_seed(seed), None)
    result = sample(gaussian_score(sde), sde, shape, spec, torch.Generator().manual_seed(seed))
    return sde, spec, x_init, result


# --- the registry -----------------------------------------------------------------------------


def test_registry_keys_are_the_sampler_names_of_the_spec():
    # A sampler registered without its word in SamplerName (or a word without a sampler) fails.
    assert set(SAMPLERS) == set(SAMPLER_NAMES)
    assert all(cls.name == name for name, cls in SAMPLERS.items())


def test_an_unknown_sampler_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="sample.sampler: expected one of"):
        sample(gaussian_score(VESDE()), VESDE(), (2, 1, 4, 4),
               SampleSpec(steps=4).model_copy(update={"sampler": "ddim"}))
    with pytest.raises(SpecError, match="sample.sampler"):
        parse_spec({"sample": {"sampler": "ddim"}})


@pytest.mark.parametrize("field, value, expected", [
    ("rtol", 0, "greater than or equal to"), ("atol", 1e-9, "greater than or equal to"),
    ("rtol", 0.5, "less than or equal to"), ("atol", "tight", "valid number"),
])
def test_ode_tolerances_are_validated_naming_the_field(field, value, expected):
    with pytest.raises(SpecError) as err:
        parse_spec({"sample": {"sampler": "ode_adaptive", field: value}})
    message = str(err.value)
    assert f"sample.{field}" in message and expected in message and "\n" not in message


def test_the_old_module_still_exports_the_samplers():
    assert samplers_facade.sample is sample and samplers_facade.SAMPLERS is SAMPLERS


# --- accuracy against the exact answer -----------------------------------------------------


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_samples_match_gaussian_data_at_the_stated_evaluations(kind, sampler):
    result = _run(sampler, _sde(kind))
    if sampler == "ode_adaptive":
        assert result.nfe <= STATED_NFE[sampler]
    else:
        assert result.nfe == STATED_NFE[sampler]
    mean_err, std_err = _moment_errors(result.images)
    assert mean_err < TOL, f"mean off by {mean_err:.4f}"
    assert std_err < TOL, f"std off by {std_err:.4f}"


@pytest.mark.parametrize("t_init, prior", STARTS)
@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_every_start_ends_where_the_exact_sampler_would(kind, sampler, t_init, prior):
    # A prior at t_init < 1 is not the marginal there (the Gaussian prior's mean is 0, not a m):
    # the exact answer from such a start is what the sampler must reproduce. PC's Langevin
    # corrector pulls every step's x towards that step's marginal, which the exact reverse SDE
    # does not: PC's predictor alone must give the exact answer, and with the corrector the
    # output must lie between it and the data (measured at 0.5, gaussian: mean 0.4997, where
    # the reverse SDE gives 0.4900 and the data 0.5).
    corrector_steps = 0 if sampler == "pc" else 1
    sde, spec, x_init, result = _start_and_output(sampler, kind, t_init=t_init, prior=prior,
                                                  corrector_steps=corrector_steps)
    expected_mean, expected_std = _expected_moments(sampler, sde, x_init, spec)
    assert abs(result.images.mean().item() - expected_mean) < TOL
    assert abs(result.images.std().item() - expected_std) < TOL
    if sampler == "pc":
        corrected = _start_and_output(sampler, kind, t_init=t_init, prior=prior)[3].images
        for got, exact, data in ((corrected.mean().item(), expected_mean, M),
                                 (corrected.std().item(), expected_std, S)):
            assert min(exact, data) - TOL < got < max(exact, data) + TOL


@pytest.mark.parametrize("t_init, prior", STARTS)
@pytest.mark.parametrize("sampler", DETERMINISTIC)
@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_deterministic_samplers_take_each_start_where_the_exact_flow_does(kind, sampler,
                                                                          t_init, prior):
    # From a half-way uniform start an ODE faithfully carries the start's mismatch with the
    # true marginal (it has no noise to forget it), so this, sample by sample, is what
    # "matches" means for it.
    sde, spec, x_init, result = _start_and_output(sampler, kind, t_init=t_init, prior=prior)
    error = (result.images.double() - _exact_flow_output(sde, x_init, spec)).abs().max().item()
    assert error < PATH_TOL[sampler]


@pytest.mark.parametrize("factor", [0.5, 2.0])
@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_tolerance_catches_a_score_off_by_a_factor_of_two(kind, sampler, factor):
    # A missing 1/2, a doubled g^2 or a halved step all look like this to the sampler.
    sde = _sde(kind)
    # 8,000 pixels are plenty here: the errors sought are ten times the tolerance.
    result = _run(sampler, sde, shape=(500, 1, 4, 4), score_fn=gaussian_score(sde, factor))
    _, std_err = _moment_errors(result.images)
    assert std_err > 2 * TOL


def _flow_error(sampler: str, kind: str, steps: int) -> float:
    _, spec, x_init, result = _start_and_output(sampler, kind, shape=(500, 1, 4, 4), steps=steps)
    exact = _exact_flow_output(_sde(kind), x_init, spec)
    return (result.images.double() - exact).abs().max().item()


@pytest.mark.parametrize("sampler, steps", [("ode", 50), ("heun", 50), ("dpm_solver_pp", 50)])
@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_second_order_samplers_are_second_order(kind, sampler, steps):
    # Halving the step quarters the error (measured ratio 4.0-4.4); Euler would halve it. For
    # DPM-Solver++ this also checks its multistep state: without D_{i-1} it is DDIM, first order.
    assert _flow_error(sampler, kind, steps) / _flow_error(sampler, kind, 2 * steps) > 3.0


@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_ode_adaptive_follows_its_tolerances(kind):
    loose = _start_and_output("ode_adaptive", kind, shape=(500, 1, 4, 4), rtol=1e-3, atol=1e-3)
    tight = _start_and_output("ode_adaptive", kind, shape=(500, 1, 4, 4), rtol=1e-6, atol=1e-6)
    errors = [(r.images.double() - _exact_flow_output(sde, x, spec)).abs().max().item()
              for sde, spec, x, r in (loose, tight)]
    assert tight[3].nfe > loose[3].nfe and errors[1] < errors[0] / 10
    assert errors[1] < 1e-5


# --- network evaluations, reproducibility, noise ------------------------------------------


@pytest.mark.parametrize("sampler, corrector_steps, planned", [
    ("pc", 1, lambda n: 2 * n),
    ("pc", 0, lambda n: n),
    ("pc", 3, lambda n: 4 * n),
    ("euler_maruyama", 1, lambda n: n),
    ("ode", 1, lambda n: 2 * n - 1),   # Heun's two evaluations per interval, one to denoise
    ("heun", 1, lambda n: 2 * n - 1),  # the same: EDM's 35 for 18 steps
    ("dpm_solver_pp", 1, lambda n: n),
])
@pytest.mark.parametrize("t_init, expected_steps", [(1.0, 40), (0.5, 20)])
def test_nfe_and_steps(sampler, corrector_steps, planned, t_init, expected_steps):
    sde = VESDE()
    calls = []
    def counted(x, t):
        calls.append(t)
        return gaussian_score(sde)(x, t)
    spec = _spec(sampler, steps=40, t_init=t_init, corrector_steps=corrector_steps)
    result = sample(counted, sde, (2, 1, 4, 4), spec, torch.Generator().manual_seed(0))
    assert result.steps == num_steps(spec) == expected_steps
    assert result.nfe == planned(expected_steps) == len(calls)
    assert SAMPLERS[sampler].planned_nfe(result.steps, spec) == result.nfe


@pytest.mark.parametrize("kind", ["ve", "vp"])
@pytest.mark.parametrize("t_init", [1.0, 0.5])
def test_ode_adaptive_counts_every_function_evaluation(kind, t_init):
    sde = _sde(kind)
    calls = []
    def counted(x, t):
        calls.append(t[0].item())
        return gaussian_score(sde)(x, t)
    result = _run("ode_adaptive", sde, shape=(8, 1, 4, 4), score_fn=counted, t_init=t_init)
    assert result.nfe == len(calls) and result.steps == 2
    # dopri5 (torchdiffeq 0.2): 2 evaluations to choose the first step, 6 per attempted step
    # (the 7th stage is the next step's first), then 1 to denoise at eps.
    assert (result.nfe - 3) % 6 == 0 and result.nfe > 9
    assert SAMPLERS["ode_adaptive"].planned_nfe(2, _spec("ode_adaptive")) is None


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_same_seed_same_images_other_seed_other_images(kind, sampler):
    sde = _sde(kind)
    first = _run(sampler, sde, seed=7, shape=(4, 1, 4, 4), steps=20).images
    again = _run(sampler, sde, seed=7, shape=(4, 1, 4, 4), steps=20).images
    other = _run(sampler, sde, seed=8, shape=(4, 1, 4, 4), steps=20).images
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("sampler", DETERMINISTIC)
def test_deterministic_samplers_draw_no_noise_after_the_start(sampler):
    sde, spec = VESDE(), _spec(sampler, steps=20)
    after_start = torch.Generator().manual_seed(3)
    initial_sample(sde, (8, 1, 4, 4), spec, after_start, None)
    after_sampling = torch.Generator().manual_seed(3)
    sample(gaussian_score(sde), sde, (8, 1, 4, 4), spec, after_sampling)
    assert torch.equal(after_start.get_state(), after_sampling.get_state())


@pytest.mark.parametrize("sampler", STOCHASTIC)
def test_stochastic_samplers_draw_noise_on_the_way(sampler):
    sde, spec = VESDE(), _spec(sampler, steps=20)
    after_start = torch.Generator().manual_seed(3)
    initial_sample(sde, (8, 1, 4, 4), spec, after_start, None)
    after_sampling = torch.Generator().manual_seed(3)
    sample(gaussian_score(sde), sde, (8, 1, 4, 4), spec, after_sampling)
    assert not torch.equal(after_start.get_state(), after_sampling.get_state())


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_result_reports_seconds(sampler):
    result = _run(sampler, VESDE(), shape=(2, 1, 4, 4), steps=10)
    assert 0 < result.seconds < 60


# --- where and how the score is asked ------------------------------------------------------


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_score_is_asked_only_between_t_init_and_eps(sampler):
    spec = _spec(sampler, steps=10, t_init=0.6)
    times = SAMPLERS[sampler].time_steps(VESDE(), spec)
    seen = []
    def recording(x, t):
        assert t.shape == (x.shape[0],) and t.dtype == torch.float32
        assert torch.all(t == t[0])
        seen.append(t[0].item())
        return gaussian_score(VESDE())(x, t)
    sample(recording, VESDE(), (2, 1, 4, 4), spec, torch.Generator().manual_seed(0))
    t_init, eps = torch.tensor([0.6, spec.eps]).tolist()   # as float32 sees them
    assert seen[0] == t_init and seen[-1] == eps
    assert all(eps <= t <= t_init for t in seen)   # never below eps
    if sampler in FIXED_STEP:
        assert set(seen) == set(times)             # on the sampler's own grid


@pytest.mark.parametrize("kind", ["ve", "vp"])
@pytest.mark.parametrize("t_init, n", [(1.0, 18), (0.5, 9), (1.0, 2)])
def test_edm_samplers_step_over_karras_sigmas(kind, t_init, n):
    # EDM eq. 5 in the SDE's own EDM sigma (std / a): spaced evenly in sigma^(1/7), from
    # sigma(t_init) to sigma(eps), VP mapped through sde.edm_sigma.
    sde = _sde(kind)
    spec = SampleSpec(sampler="heun", steps=round(n / t_init), t_init=t_init)
    times = SAMPLERS["heun"].time_steps(sde, spec)
    assert times == SAMPLERS["dpm_solver_pp"].time_steps(sde, spec) and len(times) == n
    assert times[0] == torch.tensor(t_init).item() and times[-1] == torch.tensor(spec.eps).item()
    sigma_max, sigma_min = sde.edm_sigma(torch.tensor([t_init, spec.eps], dtype=torch.float64))
    ramp = torch.arange(n, dtype=torch.float64) / (n - 1)
    hi, lo = sigma_max ** (1 / RHO), sigma_min ** (1 / RHO)
    expected = (hi + ramp * (lo - hi)) ** RHO
    torch.testing.assert_close(karras_sigmas(sigma_max.item(), sigma_min.item(), n), expected)
    # the float32 times the network sees carry the schedule to within float32 rounding
    torch.testing.assert_close(sde.edm_sigma(torch.tensor(times, dtype=torch.float64)), expected,
                               rtol=1e-5, atol=0)


def test_one_edm_step_starts_at_t_init_and_denoises():
    spec = SampleSpec(sampler="heun", steps=1, t_init=1.0)
    assert SAMPLERS["heun"].time_steps(VESDE(), spec) == [1.0]
    assert karras_sigmas(50.0, 0.01, 1).tolist() == [50.0]


def test_dpm_solver_keeps_its_previous_denoised_estimate_between_steps():
    sde = VESDE()
    score = CountedScore(gaussian_score(sde), sde)
    sampler = DPMSolverPlusPlus2M(score, sde, SampleSpec(sampler="dpm_solver_pp", steps=5), None)
    x = initial_sample(sde, (4, 1, 4, 4), sampler.spec, torch.Generator().manual_seed(0))
    assert sampler.previous_denoised is None
    x = sampler.step(x, 0)
    first = sampler.previous_denoised
    torch.testing.assert_close(first, score.denoised(
        initial_sample(sde, (4, 1, 4, 4), sampler.spec, torch.Generator().manual_seed(0)),
        torch.full((4,), 1.0)))
    sampler.step(x, 1)
    assert sampler.previous_denoised is not first
    assert sampler.previous_h == pytest.approx(math.log(sampler.sigmas[1] / sampler.sigmas[2]))


@pytest.mark.parametrize("sampler", ["pc", "ode", "heun", "dpm_solver_pp", "ode_adaptive"])
def test_last_step_returns_the_noise_free_mean(sampler):
    # Data that is exactly m: the last step jumps from eps to 0, so its mean
    # x + sigma(eps)^2 score is m exactly, whatever noise is left in x.
    sde = VESDE()
    def point_mass_score(x, t):
        return -(x - M) / sde.sigma(t).view(-1, 1, 1, 1) ** 2
    result = _run(sampler, sde, shape=(64, 1, 4, 4), score_fn=point_mass_score, steps=50)
    assert torch.allclose(result.images, torch.full_like(result.images, M), atol=1e-5)


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
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


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_a_given_start_is_where_the_sampler_begins(kind, sampler):
    # The denoising swap starts from a real x_t, not a prior draw. An ODE must carry each given
    # start exactly where the flow takes it; an SDE sampler's output given x_t has the mean
    # m + k (x_t - a m), k = a s^2 / v (the posterior's, `_expected_moments`), so its slope on
    # x_t is k (PC's corrector mixes x away from its start, so PC runs its predictor alone:
    # the reverse SDE). A start ignored or redrawn would give slope 0. An SDE sampler starts at
    # 0.2, where k is large enough to measure (0.77 VE, 0.023 VP; 0.003 for VP at 0.5).
    sde, t_init = _sde(kind), (0.5 if sampler in DETERMINISTIC else 0.2)
    spec = _spec(sampler, t_init=t_init, corrector_steps=0 if sampler == "pc" else 1)
    gen = torch.Generator().manual_seed(5)
    x0 = M + S * torch.randn(SHAPE, generator=gen)
    mean, std = sde.marginal_prob(x0, torch.full((SHAPE[0],), t_init))
    x_t = mean + std.view(-1, 1, 1, 1) * torch.randn(SHAPE, generator=gen)
    images = sample(gaussian_score(sde), sde, SHAPE, spec, torch.Generator().manual_seed(0),
                    x_init=x_t).images.double()
    if sampler in DETERMINISTIC:
        exact = _exact_flow_output(sde, x_t, spec)
        assert (images - exact).abs().max().item() < PATH_TOL[sampler]
        return
    a, std_t = _at(sde, t_init)
    k = a * S ** 2 / std_t ** 2
    x = x_t.double().flatten() - a * M
    slope = ((images.flatten() - M) * x).sum().item() / (x * x).sum().item()
    assert slope == pytest.approx(k, rel=0.2)
    assert abs((images.flatten() - M - k * x).mean().item()) < TOL


def test_a_given_start_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"x_init: expected shape \(8, 1, 4, 4\)"):
        sample(gaussian_score(VESDE()), VESDE(), (8, 1, 4, 4), SampleSpec(steps=5),
               x_init=torch.zeros(4, 1, 4, 4))


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


@pytest.mark.parametrize("sampler, kind, first_pixels", [
    ("pc", "ve", [0.505166, 0.320444, 0.532367, 0.086665]),
    ("pc", "vp", [2.046635, 0.613879, 0.22539, 1.289265]),
    ("euler_maruyama", "ve", [0.641698, 0.346949, 2.030737, -0.071285]),
    ("euler_maruyama", "vp", [0.65429, 0.393651, 1.180204, -1.634288]),
    ("ode", "ve", [0.369354, 0.733365, 0.441404, 0.540761]),
    ("ode", "vp", [0.36657, 0.676418, 0.41845, 0.506627]),
])
def test_the_papers_samplers_give_the_images_they_gave_before_the_sampler_interface(
        sampler, kind, first_pixels):
    # Recorded from drl_engine/samplers.py before the samplers moved to drl_engine/sampling/
    # (bit-identical there on 192 settings: every SDE, start, corrector count, given starts and
    # real networks of both parameterizations): the same seed must keep giving the same images.
    images = _run(sampler, _sde(kind), seed=11, shape=(4, 1, 2, 2), steps=10, t_init=0.7,
                  prior="uniform_gaussian").images
    assert images.flatten()[:4].tolist() == pytest.approx(first_pixels, abs=2e-6)


# --- what ode_adaptive does when the integration fails ---------------------------------------


def test_ode_adaptive_gives_nan_images_for_a_diverged_network():
    # As a fixed-step sampler's would be: the caller's finiteness check reports it.
    result = _run("ode_adaptive", VESDE(), shape=(2, 1, 4, 4),
                  score_fn=lambda x, t: torch.full_like(x, float("nan")))
    assert result.images.shape == (2, 1, 4, 4) and torch.isnan(result.images).all()


def test_ode_adaptive_that_cannot_meet_its_tolerances_says_which_fields(monkeypatch):
    monkeypatch.setattr(ode_adaptive, "MAX_SOLVER_STEPS", 3)
    with pytest.raises(RuntimeError, match=r"sample.rtol / sample.atol: dopri5 took more than 3"):
        _run("ode_adaptive", VESDE(), shape=(2, 1, 4, 4))


# --- the time grid and the priors -----------------------------------------------------------


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


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_progress_reports_every_step(sampler):
    seen = []
    spec = _spec(sampler, steps=12, t_init=0.5)
    result = sample(gaussian_score(VESDE()), VESDE(), (2, 1, 4, 4), spec,
                    torch.Generator().manual_seed(0),
                    progress=lambda done, total: seen.append((done, total)))
    steps = 2 if sampler == "ode_adaptive" else 6   # the integration, then the denoising step
    assert result.steps == steps and seen == [(i, steps) for i in range(1, steps + 1)]


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


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_t_init_at_or_below_eps_is_refused(sampler):
    spec = SampleSpec(sampler=sampler, t_init=1e-3, eps=1e-3)
    with pytest.raises(ValueError, match=r"sample\.t_init"):
        sample(gaussian_score(VESDE()), VESDE(), (2, 1, 4, 4), spec)


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="shape"):
        sample(gaussian_score(VESDE()), VESDE(), (0, 1, 4, 4), SampleSpec(steps=4))


def test_score_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="score_fn.*shape"):
        sample(lambda x, t: x[:, :1, :2], VESDE(), (2, 1, 4, 4), SampleSpec(steps=4))
