"""The continuous-time VDM and the VDM-VAE: closed forms, the ELBO's bookkeeping, sampling, `drl run`.

Unit tests use 8x8 images and U-Nets a few thousand parameters big; the training tests use the
bundled digits (16x16), which need no files.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from drl_cli.main import main
from drl_engine.checkpoint import latest_checkpoint, load_model
from drl_engine.datasets import ImageDataset, load_dataset
from drl_engine.encode import encode_at
from drl_engine.generate import generate, generate_interpolations
from drl_engine.objective import kl_to_standard_normal
from drl_engine.pipeline import run_experiment
from drl_engine.registry import build_model, training_loss
from drl_engine.spec import SampleSpec, SpecError, parse_spec
from drl_engine.trainer import train
from drl_engine.vdm.code_use import measure_code_use
from drl_engine.vdm.evaluate import evaluate_bits_per_dim
from drl_engine.vdm.fourier import fourier_channels, with_fourier_features
from drl_engine.vdm.losses import (TERMS, alpha_sigma, antithetic_t, bits_per_dim, diffuse,
                                   elbo_terms, prior_loss, reconstruction_log_probs,
                                   reconstruction_loss, vdm_training_loss)
from drl_engine.vdm.model import VDMModel
from drl_engine.vdm.pixels import bin_centres, centres_to_pixels, pixels_to_centres
from drl_engine.vdm.sampling import ancestral_sample, interpolate_codes
from drl_engine.vdm.schedule import (FixedLinearSchedule, LearnedSchedule, build_schedule,
                                     gamma_and_derivative)

GAMMA_MIN, GAMMA_MAX = -13.3, 5.0
TINY_MODEL = {"base_channels": 8, "channel_mult": [1], "num_res_blocks": 1, "attn_resolutions": [],
              "latent_dim": 3, "dropout": 0.0}


def tiny_spec(kind: str = "vdm_vae", **vdm):
    return parse_spec({"model": {"kind": kind, **TINY_MODEL}, "vdm": {"schedule_features": 16, **vdm}})


def tiny_model(kind: str = "vdm_vae", seed: int = 0, image_shape=(1, 8, 8), **vdm) -> VDMModel:
    torch.manual_seed(seed)
    return build_model(tiny_spec(kind, **vdm), image_shape)


def random_pixels(n: int, shape=(1, 8, 8), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)


def randomise_(module: torch.nn.Module, seed: int) -> None:
    """Parameters far from any initialisation: normal draws with a random scale per tensor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            scale = float(torch.empty(()).uniform_(0.01, 5.0, generator=g))
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def endpoint_values(schedule) -> list[float]:
    """(gamma(0), gamma(1)) of a schedule as floats."""
    return [float(e.detach()) for e in schedule.endpoints()]


# --- spec and registry ------------------------------------------------------------------------

def test_spec_defaults_and_errors_name_the_field():
    spec = parse_spec({"model": {"kind": "vdm_vae"}, "sample": {"code_source": "prior"}})
    assert (spec.vdm.schedule, spec.vdm.gamma_min, spec.vdm.gamma_max) == ("learned", -13.3, 5.0)
    assert spec.vdm.fourier_exponents == [7, 8]
    assert spec.vdm.kl_anneal_steps == 0 and spec.vdm.free_bits == 0.0   # a true ELBO by default
    with pytest.raises(SpecError, match="vdm.gamma_max"):
        parse_spec({"vdm": {"gamma_min": 2.0, "gamma_max": 1.0}})
    with pytest.raises(SpecError, match="model.encoder.*static"):
        parse_spec({"model": {"kind": "vdm_vae", "encoder": "time_conditioned"}})
    with pytest.raises(SpecError, match="vdm.schedule"):
        parse_spec({"vdm": {"schedule": "cosine"}})


def test_registry_builds_each_kind():
    assert isinstance(tiny_model("vdm_vae"), VDMModel) and tiny_model("vdm_vae").has_encoder
    vdm = tiny_model("vdm")
    assert not vdm.has_encoder and vdm.eps_net.code_mlp is None
    # Fourier features widen the eps-network's input: 1 channel + 2 * 2 exponents.
    assert vdm.eps_net.down.conv_in.in_channels == fourier_channels(1, [7, 8]) == 5
    h, gamma = torch.zeros(2, 5, 8, 8), torch.zeros(2)
    with pytest.raises(ValueError, match="unconditional"):
        vdm.eps_net(h, gamma, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="takes no code"):
        vdm.predict_eps(h[:, :1], gamma, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="needs a code"):
        tiny_model("vdm_vae").predict_eps(h[:, :1], gamma, None)
    with pytest.raises(SpecError, match="model.kind"):
        VDMModel(parse_spec({"model": {"kind": "drl"}}), (1, 8, 8))


# --- pixels and Fourier features ---------------------------------------------------------------

def test_pixels_map_to_bin_centres_and_back():
    k = torch.arange(256, dtype=torch.uint8)
    x = pixels_to_centres(k)
    assert x[0] == pytest.approx(-1 + 1 / 256) and x[-1] == pytest.approx(1 - 1 / 256)
    assert torch.allclose(x.diff(), torch.full((255,), 2 / 256))
    assert torch.equal(centres_to_pixels(x), k.long())
    with pytest.raises(ValueError, match="uint8"):
        pixels_to_centres(x)


def test_fourier_features_formula():
    z = torch.randn(2, 3, 4, 4)
    h = with_fourier_features(z, [7, 8])
    assert h.shape == (2, fourier_channels(3, [7, 8]), 4, 4) == (2, 15, 4, 4)
    assert torch.equal(h[:, :3], z)
    # Channel c's features sit together: sin at 2^7 pi, 2^8 pi, then the cosines likewise.
    assert torch.allclose(h[:, 3 + 2 * 1], torch.sin(2 ** 7 * math.pi * z[:, 1]), atol=1e-5)
    assert torch.allclose(h[:, 9 + 2 * 2 + 1], torch.cos(2 ** 8 * math.pi * z[:, 2]), atol=1e-5)
    assert with_fourier_features(z, []) is z


# --- the schedule ------------------------------------------------------------------------------

@pytest.mark.parametrize("learn_endpoints", [True, False])
@pytest.mark.parametrize("seed", range(25))
def test_learned_gamma_is_monotone_from_its_endpoints_for_random_parameters(seed, learn_endpoints):
    schedule = LearnedSchedule(GAMMA_MIN, GAMMA_MAX, features=64, learn_endpoints=learn_endpoints)
    randomise_(schedule, seed)
    t = torch.linspace(0.0, 1.0, 4001)
    with torch.no_grad():
        gamma = schedule(t)
        gamma_0, gamma_1 = endpoint_values(schedule)
    span = gamma_1 - gamma_0
    assert torch.isfinite(gamma).all() and span > 0
    assert (gamma.diff() >= -1e-6 * span).all(), f"gamma decreases by {-gamma.diff().min():.2e}"
    assert gamma[0].item() == pytest.approx(gamma_0, abs=1e-5 * span)
    assert gamma[-1].item() == pytest.approx(gamma_1, abs=1e-5 * span)
    if not learn_endpoints:   # fixed ends: exactly the configured ones, whatever the shape
        assert (gamma_0, gamma_1) == pytest.approx((GAMMA_MIN, GAMMA_MAX))


def test_learned_endpoints_start_at_the_configured_ones_and_only_learned_has_them():
    learned = build_schedule(tiny_spec(schedule="learned").vdm)
    fixed_ends = build_schedule(tiny_spec(schedule="learned_fixed_ends").vdm)
    names = {n for n, _ in learned.named_parameters()}
    assert {"gamma_0", "log_gamma_span"} <= names
    assert {n for n, _ in fixed_ends.named_parameters()} == names - {"gamma_0", "log_gamma_span"}
    for schedule in (learned, fixed_ends):
        assert endpoint_values(schedule) == pytest.approx([GAMMA_MIN, GAMMA_MAX])


def test_learned_gamma_starts_near_the_linear_schedule_and_fixed_is_linear():
    t = torch.linspace(0.0, 1.0, 101)
    torch.manual_seed(0)
    with torch.no_grad():
        learned = LearnedSchedule(GAMMA_MIN, GAMMA_MAX)(t)
        fixed = FixedLinearSchedule(GAMMA_MIN, GAMMA_MAX)(t)
    assert torch.allclose(fixed, GAMMA_MIN + (GAMMA_MAX - GAMMA_MIN) * t)
    assert (learned - fixed).abs().max() < 0.05


@pytest.mark.parametrize("seed", range(4))
def test_gamma_derivative_from_autograd_matches_finite_differences(seed):
    schedule = LearnedSchedule(GAMMA_MIN, GAMMA_MAX, features=64)
    randomise_(schedule, seed)
    t = torch.linspace(0.01, 0.99, 50)
    gamma, dgamma = gamma_and_derivative(schedule, t, create_graph=False)
    exact = copy.deepcopy(schedule).double()
    h = 1e-5
    with torch.no_grad():
        t64 = t.double()
        fd = (exact(t64 + h) - exact(t64 - h)) / (2 * h)
        span = float(schedule.endpoints()[1] - schedule.endpoints()[0])
        assert torch.allclose(gamma, schedule(t), atol=1e-5 * span)
    assert torch.allclose(dgamma.double(), fd, rtol=2e-3, atol=1e-3 * span)
    assert (dgamma >= 0).all()

    _, dfixed = gamma_and_derivative(FixedLinearSchedule(GAMMA_MIN, GAMMA_MAX), t, create_graph=False)
    assert torch.allclose(dfixed, torch.full_like(t, GAMMA_MAX - GAMMA_MIN))


def test_antithetic_t_puts_one_t_in_each_of_b_equal_strata():
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 64):
        for _ in range(20):
            t = antithetic_t(n, g, "cpu")
            assert t.shape == (n,) and (t >= 0).all() and (t < 1).all()
            strata = torch.floor(t * n).long().sort().values
            assert torch.equal(strata, torch.arange(n))
            if n > 1:
                assert torch.allclose(t.sort().values.diff(), torch.full((n - 1,), 1 / n), atol=1e-6)
    # Over many batches the offset is uniform: the pooled t cover [0, 1] evenly.
    pooled = torch.cat([antithetic_t(8, g, "cpu") for _ in range(2000)])
    counts = torch.histc(pooled, bins=10, min=0.0, max=1.0)
    assert (counts - len(pooled) / 10).abs().max() < 0.1 * len(pooled) / 10


# --- the loss terms ----------------------------------------------------------------------------

class OracleVDM(VDMModel):
    """A VDMModel whose eps-prediction is exact: it is handed the clean batch x beforehand."""

    clean: torch.Tensor

    def predict_eps(self, z_t, gamma_t, code):
        alpha, sigma = alpha_sigma(gamma_t.reshape(-1, 1, 1, 1))
        return (z_t - alpha * self.clean) / sigma


@pytest.mark.parametrize("schedule", ["learned", "fixed"])
def test_a_perfect_eps_predictor_gives_zero_diffusion_loss(schedule):
    torch.manual_seed(0)
    oracle = OracleVDM(tiny_spec("vdm", schedule=schedule), (1, 8, 8))
    pixels = random_pixels(16)
    oracle.clean = oracle.pixels_to_model_range(pixels)
    terms = elbo_terms(oracle, pixels, torch.Generator().manual_seed(1))
    assert terms.diffusion.abs().max() < 1e-3          # nats per image of 64 pixels
    # ...while the same batch through an untrained network costs many nats.
    untrained = tiny_model("vdm", schedule=schedule)
    assert elbo_terms(untrained, pixels, torch.Generator().manual_seed(1)).diffusion.mean() > 100


def test_kl_terms_match_the_closed_form_and_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    expected = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(1)
    closed = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(1)
    assert torch.allclose(kl_to_standard_normal(mean, logvar), expected, atol=1e-5)
    assert torch.allclose(closed, expected, atol=1e-5)

    # The prior term: q(z_1 | x) = N(alpha_1 x, sigma_1^2) against N(0, I).
    x = pixels_to_centres(random_pixels(4))
    alpha_1, sigma_1 = alpha_sigma(torch.tensor(GAMMA_MAX))
    expected = kl_divergence(Normal(alpha_1 * x, sigma_1), Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(prior_loss(x, GAMMA_MAX), expected, rtol=1e-4)


@pytest.mark.parametrize("gamma_0", [GAMMA_MIN, -6.0, 0.0, 3.0])
def test_reconstruction_is_a_distribution_over_the_256_values(gamma_0):
    z = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 1.2
    log_probs = reconstruction_log_probs(z, gamma_0)
    assert log_probs.shape == (3, 1, 4, 4, 256)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, 1, 4, 4), atol=1e-5)
    # The same distribution from Gaussian densities at the bin centres, normalised by hand
    # (in float64: at gamma_min the far logits are ~1e6 and float32 rounds them by ~1e-5).
    dens = Normal(z.double()[..., None], math.exp(0.5 * gamma_0)).log_prob(bin_centres().double())
    expected = torch.log_softmax(dens, -1)
    assert torch.allclose(log_probs.exp().double(), expected.exp(), atol=1e-5)
    likely = expected > -30
    assert torch.allclose(log_probs.double()[likely], expected[likely], atol=1e-3)


def test_reconstruction_is_nearly_exact_at_gamma_min():
    pixels = random_pixels(200)
    x = pixels_to_centres(pixels)
    nats = reconstruction_loss(pixels, x, GAMMA_MIN, torch.Generator().manual_seed(0))
    # The noise std exp(gamma_min / 2) = 0.0013 is 1/3 of half a bin (1/256): an interior
    # pixel is misread with probability 2 P(N(0,1) > 3.03) = 0.0025, at a cost of 1-6 nats,
    # so about 0.008 nats per pixel on average.
    assert (nats >= 0).all() and 0.002 < nats.mean() / 64 < 0.02
    assert (reconstruction_loss(pixels, x, 0.0, torch.Generator().manual_seed(0)) > 64).all()


@pytest.mark.parametrize("kind", ["vdm_vae", "vdm"])
def test_elbo_terms_add_up_to_the_reported_total(kind):
    model = tiny_model(kind)
    loss, stats = training_loss(model, random_pixels(8), model.spec, torch.Generator().manual_seed(0), 0)
    parts = sum(stats[f"{name}_bpd"] for name in TERMS)
    assert stats["bpd"] == pytest.approx(parts, rel=1e-6)
    assert stats["loss"] == pytest.approx(loss.item()) == pytest.approx(stats["bpd"], rel=1e-6)
    assert (stats["kl_bpd"] > 0) == (kind == "vdm_vae")
    assert "kl_weight" not in stats

    x = random_pixels(8)
    terms = elbo_terms(model, x, torch.Generator().manual_seed(0))
    assert torch.allclose(terms.total(), terms.diffusion + terms.prior + terms.reconstruction + terms.kl)
    nats = terms.total().mean().item()
    assert bits_per_dim(nats, 64) == pytest.approx(nats / (64 * math.log(2)), rel=1e-12)


def test_kl_annealing_and_free_bits_change_the_objective_not_the_reported_elbo():
    annealed = tiny_model("vdm_vae", kl_anneal_steps=10)
    pixels, gen = random_pixels(8), lambda: torch.Generator().manual_seed(0)
    loss, stats = training_loss(annealed, pixels, annealed.spec, gen(), 0)
    assert stats["kl_weight"] == pytest.approx(0.1)
    assert stats["loss"] == pytest.approx(stats["bpd"] - 0.9 * stats["kl_bpd"], rel=1e-5)
    _, late = training_loss(annealed, pixels, annealed.spec, gen(), 50)
    assert late["kl_weight"] == 1.0 and late["loss"] == pytest.approx(late["bpd"], rel=1e-6)

    free = tiny_model("vdm_vae", free_bits=5.0)        # far above any dimension's KL here
    _, stats = training_loss(free, pixels, free.spec, gen(), 0)
    kl_floor_bpd = bits_per_dim(5.0 * free.latent_dim, 64)
    assert stats["loss"] == pytest.approx(stats["bpd"] - stats["kl_bpd"] + kl_floor_bpd, rel=1e-5)


def test_the_schedule_shape_gets_the_variance_gradient_and_the_endpoints_the_bound():
    """Shape parameters: grad of mean_b (L_b - mean L)^2; the learned endpoints gamma(0),
    gamma(1) and every other parameter: grad of mean_b L_b (the paper's split)."""
    model = tiny_model("vdm_vae").eval()      # eval: no dropout, so both passes are the same function
    # At VDM's initialisation the gated part is nearly linear in t, which the rescaling to
    # the endpoints absorbs, so its gradient starts near zero; random weights give it a shape.
    for layer in (model.schedule.l1, model.schedule.l2_in, model.schedule.l2_out):
        randomise_(layer, seed=1)
    pixels = random_pixels(8)
    loss, _ = vdm_training_loss(model, pixels, model.spec, torch.Generator().manual_seed(3))
    loss.backward()
    got = {name: p.grad.clone() for name, p in model.named_parameters()}

    model.zero_grad()
    terms = elbo_terms(model, pixels, torch.Generator().manual_seed(3))
    per_example = bits_per_dim(terms.total(), 64)
    endpoints = ("schedule.gamma_0", "schedule.log_gamma_span")
    shape = [(n, p) for n, p in model.named_parameters()
             if n.startswith("schedule.") and n not in endpoints]
    variance = ((per_example - per_example.mean().detach()) ** 2).mean()
    expected_shape = torch.autograd.grad(variance, [p for _, p in shape], retain_graph=True)
    others = [(n, p) for n, p in model.named_parameters() if n not in dict(shape)]
    expected_others = torch.autograd.grad(per_example.mean(), [p for _, p in others], allow_unused=True)

    scale = max(e.abs().max() for e in expected_shape)
    assert scale > 0
    for (name, _), expected in zip(shape, expected_shape):
        assert torch.allclose(got[name], expected, rtol=1e-3, atol=1e-5 * scale), name
    for (name, _), expected in zip(others, expected_others):
        if expected is not None:
            assert torch.allclose(got[name], expected, rtol=1e-4, atol=1e-7), name
    # Both endpoints get a gradient: through the prior (gamma(1)), the reconstruction
    # (gamma(0)) and the diffusion term (both, through gamma' and gamma(t)).
    assert {n for n, _ in others} >= set(endpoints)
    for name in endpoints:
        assert got[name].abs() > 0, name


def test_training_moves_the_endpoints_and_keeps_gamma_increasing():
    model = tiny_model("vdm_vae")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    pixels = random_pixels(16)
    for step in range(5):
        optimizer.zero_grad()
        loss, _ = vdm_training_loss(model, pixels, model.spec, torch.Generator().manual_seed(step))
        loss.backward()
        optimizer.step()
    gamma_0, gamma_1 = endpoint_values(model.schedule)
    assert (gamma_0, gamma_1) != pytest.approx((GAMMA_MIN, GAMMA_MAX), abs=1e-3)
    with torch.no_grad():
        gamma = model.schedule(torch.linspace(0.0, 1.0, 1001))
    assert (gamma.diff() >= 0).all() and gamma[-1] > gamma[0]
    assert float(gamma[0]) == pytest.approx(gamma_0, abs=1e-4)


def test_a_checkpoint_from_before_learned_endpoints_loads_as_fixed_ends_and_resumes_only_so(tmp_path):
    spec = digits_spec("vdm_vae", iterations=2, checkpoint_every=2, log_every=1)
    old = spec.model_copy(update={"vdm": spec.vdm.model_copy(update={"schedule": "learned_fixed_ends"})})
    ds = load_dataset(spec.dataset)
    train(old, ds, tmp_path / "ckpt", device=torch.device("cpu"))
    # What such a checkpoint held: the spec said 'learned', the weights had no endpoints.
    path = latest_checkpoint(tmp_path / "ckpt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["spec"]["vdm"]["schedule"] = "learned"
    assert "schedule.gamma_0" not in ckpt["model"]
    torch.save(ckpt, path)

    loaded = load_model(path, device="cpu")
    assert loaded.spec.vdm.schedule == "learned_fixed_ends" and not loaded.schedule.learn_endpoints
    assert endpoint_values(loaded.schedule) == pytest.approx([GAMMA_MIN, GAMMA_MAX])
    with pytest.raises(ValueError, match="vdm.schedule"):
        train(spec.model_copy(update={"train": spec.train.model_copy(update={"iterations": 4})}),
              ds, tmp_path / "ckpt", device=torch.device("cpu"))


# --- does the decoder use z? (the within-model test) -------------------------------------------

class CodeOracleVDM(VDMModel):
    """A vdm_vae whose code is its image (64-d for 8x8, almost no posterior noise) and whose
    eps-prediction is exact given the image's own code: it uses z and nothing else."""

    def encoder_output(self, x, t=None):
        return x.flatten(1), torch.full((len(x), x[0].numel()), -30.0)

    def predict_eps(self, z_t, gamma_t, code):
        alpha, sigma = alpha_sigma(gamma_t.reshape(-1, 1, 1, 1))
        return (z_t - alpha * code.view_as(z_t)) / sigma


def decoder_blind_to_z() -> VDMModel:
    """A tiny vdm_vae with a working eps-network whose code input changes nothing."""
    model = tiny_model("vdm_vae").eval()
    randomise_(model.eps_net.conv_out, seed=2)    # the output layer starts at zero
    with torch.no_grad():
        model.eps_net.code_mlp[0].weight.zero_()  # code_mlp(z) is then the same for every z
    return model


def test_a_decoder_blind_to_z_scores_exactly_the_same_with_shuffled_and_prior_codes():
    model, pixels = decoder_blind_to_z(), random_pixels(12)
    test = measure_code_use(model, pixels, batch_size=5, seed=0, device="cpu")
    assert test.shuffled == test.posterior and test.prior == test.posterior
    assert (test.shuffled_gain, test.shuffled_noise, test.prior_gain) == (0.0, 0.0, 0.0)
    assert not test.uses_code and test.images == 12
    # The posterior column is the reported diffusion term: the same draws at the same seed.
    bits = evaluate_bits_per_dim(model, pixels, 5, 0, "cpu")
    assert test.posterior == pytest.approx(bits["diffusion"], rel=1e-9)


def test_a_decoder_that_uses_z_loses_likelihood_with_other_images_codes():
    # A narrow fixed schedule bounds alpha / sigma, so a wrong code costs about as much at
    # every t (with the paper's range the cost at small t is heavy-tailed over images).
    spec = parse_spec({"model": {"kind": "vdm_vae", **TINY_MODEL, "latent_dim": 64},
                       "vdm": {"schedule": "fixed", "gamma_min": -2.0, "gamma_max": 2.0}})
    torch.manual_seed(0)
    oracle = CodeOracleVDM(spec, (1, 8, 8)).eval()
    test = measure_code_use(oracle, random_pixels(32), batch_size=8, seed=0, device="cpu")
    assert test.posterior < 1e-3 < test.shuffled and test.posterior < test.prior
    assert test.shuffled_gain > test.shuffled_noise > 0 and test.prior_gain > test.prior_noise
    assert test.uses_code and test.as_dict()["uses_code"] is True
    with pytest.raises(ValueError, match="no code"):
        measure_code_use(tiny_model("vdm"), random_pixels(4), 4, 0, "cpu")
    with pytest.raises(ValueError, match="no code to replace"):
        elbo_terms(tiny_model("vdm"), random_pixels(4), None, replace_code=lambda z: z)


# --- sampling and generation -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["vdm_vae", "vdm"])
def test_samples_have_the_right_shape_range_and_are_seeded(kind):
    model = tiny_model(kind).eval()
    codes = torch.randn(3, model.latent_dim) if kind == "vdm_vae" else None
    a = ancestral_sample(model, 3, codes, 6, torch.Generator().manual_seed(0), "cpu")
    b = ancestral_sample(model, 3, codes, 6, torch.Generator().manual_seed(0), "cpu")
    assert a.shape == (3, 1, 8, 8) and a.dtype == torch.int64
    assert a.min() >= 0 and a.max() <= 255 and torch.equal(a, b)

    spec = SampleSpec(steps=5, count=4, code_source="prior" if kind == "vdm_vae" else "encoded")
    gen = generate(model, spec, random_pixels(4), "cpu")
    assert gen.images.shape == (4, 1, 8, 8) and gen.images.dtype == torch.float32
    assert gen.images.min() >= 0 and gen.images.max() <= 1
    assert torch.allclose(gen.images * 255, (gen.images * 255).round(), atol=1e-4)   # whole pixel values
    assert gen.result.steps == gen.result.nfe == 5
    assert (gen.codes is None) == (kind == "vdm")


def test_reconstructions_and_interpolations_use_the_encoder_mean():
    model = tiny_model("vdm_vae").eval()
    source = random_pixels(5)
    recon = generate(model, SampleSpec(steps=4, count=3, code_source="encoded"), source, "cpu")
    with torch.no_grad():
        means = model.encode(model.pixels_to_model_range(source))
    assert torch.allclose(recon.codes, means[:3])
    assert torch.allclose(recon.references * 255, source[:3].float())

    interp = generate_interpolations(model, SampleSpec(steps=4), source, "cpu", pairs=2, points=5)
    assert interp.images.shape == (10, 1, 8, 8) and interp.references.shape == (4, 1, 8, 8)
    assert torch.allclose(interp.codes[0], means[0]) and torch.allclose(interp.codes[4], means[1])
    assert torch.allclose(interp.codes[2], (means[0] + means[1]) / 2, atol=1e-6)
    assert torch.allclose(interpolate_codes(means[0], means[1], 3)[1], (means[0] + means[1]) / 2)
    with pytest.raises(ValueError, match="no encoder"):
        generate_interpolations(tiny_model("vdm"), SampleSpec(steps=4), source, "cpu")


def test_codes_are_t_independent_and_vdm_has_none_to_encode():
    model = tiny_model("vdm_vae")
    enc = encode_at(model, random_pixels(6), [0.0, 0.5, 1.0], 4, torch.device("cpu"))
    assert enc.t_independent and enc.by_t[0.0].shape == (6, 3) and enc.by_t[0.0] is enc.by_t[1.0]
    with pytest.raises(ValueError, match="'vdm' has no encoder"):
        encode_at(tiny_model("vdm"), random_pixels(6), [0.5], 4, torch.device("cpu"))
    # z is a diffusion on x's space only: a changed diffusion noise level leaves it alone.
    x = pixels_to_centres(random_pixels(2))
    assert torch.equal(model.encode(x, 0.1), model.encode(x, 0.9))
    assert diffuse(x, torch.full((2,), GAMMA_MIN), torch.zeros_like(x)).sub(x).abs().max() < 1e-5


# --- training ----------------------------------------------------------------------------------

def digits_spec(kind: str, **train):
    return parse_spec({
        "dataset": {"name": "digits", "train_limit": 300, "test_limit": 64},
        "model": {"kind": kind, **TINY_MODEL, "latent_dim": 4},
        "vdm": {"schedule_features": 16},
        "train": {"iterations": 60, "batch_size": 32, "lr": 5e-3, "warmup": 0, "ema_decay": 0.0,
                  "checkpoint_every": 60, "log_every": 20, "device": "cpu", **train},
    })


@pytest.mark.slow
def test_a_briefly_trained_tiny_vdm_vae_is_below_8_bits_per_dim(tmp_path):
    spec = digits_spec("vdm_vae")
    ds = load_dataset(spec.dataset)
    torch.manual_seed(0)
    untrained = evaluate_bits_per_dim(build_model(spec, ds.image_shape), ds.x_test, 64, 0, "cpu")
    result = train(spec, ds, tmp_path / "ckpt", device=torch.device("cpu"))
    bits = evaluate_bits_per_dim(result.model, ds.x_test, 64, 0, "cpu")
    assert all(math.isfinite(bits[name]) for name in (*TERMS, "total"))
    assert bits["total"] < 8.0 < untrained["total"], (untrained, bits)
    assert bits["total"] == pytest.approx(sum(bits[name] for name in TERMS))
    assert bits["images"] == 64
    assert evaluate_bits_per_dim(result.model, ds.x_test, 64, 0, "cpu") == bits   # seeded

    # The checkpoint rebuilds the same kind with the same (EMA) weights.
    loaded = load_model(latest_checkpoint(tmp_path / "ckpt"), device="cpu")
    assert isinstance(loaded, VDMModel) and loaded.kind == "vdm_vae"
    assert evaluate_bits_per_dim(loaded, ds.x_test, 64, 0, "cpu") == bits


@pytest.mark.slow
def test_drl_run_vdm_vae_end_to_end(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "dataset": {"name": "digits", "train_limit": 200, "test_limit": 40},
        "model": {"kind": "vdm_vae", **TINY_MODEL, "latent_dim": 2},
        "vdm": {"schedule_features": 16},
        "train": {"iterations": 20, "batch_size": 16, "lr": 5e-3, "warmup": 0,
                  "checkpoint_every": 20, "log_every": 10, "device": "cpu"},
        "evaluate": {"t_grid": [0.5], "probes": ["linear"], "label_budgets": [20],
                     "probe_train_limit": 100},
        "sample": {"steps": 8, "count": 4},
    }))
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    bits = metrics["bits_per_dim"]
    assert bits["split"] == "test" and bits["images"] == 40 and bits["training_objective"] == "elbo"
    assert all(math.isfinite(bits[name]) for name in (*TERMS, "total"))
    assert bits["total"] == pytest.approx(sum(bits[name] for name in TERMS))
    assert metrics["sample"] == {**metrics["sample"], "sampler": "ancestral", "code_source": "prior",
                                 "count": 4, "steps": 8, "finite": True}
    assert metrics["encode"]["t_independent"] is True
    for name in ("samples.png", "reconstructions.png", "interpolations.png", "probes.csv"):
        assert (out / name).stat().st_size > 0, name
    assert np.load(out / "embeddings" / "test_t=0.500.npy").shape == (40, 2)


def test_vdm_run_skips_encoding_with_a_message(tmp_path):
    spec = digits_spec("vdm", iterations=2, checkpoint_every=2, log_every=1)
    spec = spec.model_copy(update={"sample": SampleSpec(steps=3, count=2)})
    ds = load_dataset(spec.dataset)
    ds = ImageDataset(ds.name, ds.x_train, ds.y_train, ds.x_test[:8], ds.y_test[:8])
    lines: list[str] = []
    summary = run_experiment(spec, tmp_path / "out", log=lines.append, dataset=ds)
    assert any("'vdm' has no encoder: encode and probe stages skipped" in line for line in lines)
    assert summary.metrics["encode"] is None and summary.metrics["probes"] is None
    assert summary.metrics["sample"]["code_source"] is None
    assert math.isfinite(summary.metrics["bits_per_dim"]["total"])
    assert (tmp_path / "out" / "samples.png").is_file()
    assert not (tmp_path / "out" / "embeddings").exists()
