"""The `edm` parameterization, the `window` / `log_normal` t distributions and the decoder
fine-tune phase, checked against closed forms (Gaussian data) and bit-for-bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from drl_engine.datasets import load_dataset, to_model_range
from drl_engine.edm import edm_coefficients, edm_loss_weight, sigma_data_of_pixels
from drl_engine.model import DRLModel
from drl_engine.objective import drl_loss, sample_t
from drl_engine.samplers import sample
from drl_engine.sde import VESDE, VPSDE, _bcast
from drl_engine.spec import ObjectiveSpec, SpecError, parse_spec
from drl_engine.trainer import train

SD = 0.3   # the Gaussian data's std in these tests


def edm_spec(sde: str = "ve", sigma_data: float | None = SD, **objective):
    return parse_spec({
        "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                  "attn_resolutions": [], "dropout": 0.0, "latent_dim": 4, "code_mlp_layers": 2},
        "sde": {"kind": sde},
        "objective": {"parameterization": "edm", "sigma_data": sigma_data, "l1_weight": 0.0,
                      **objective},
    })


def zero_output_model(sde: str) -> DRLModel:
    """An edm DRLModel whose network F outputs 0, so D = c_skip x: the optimal denoiser of
    N(0, SD^2) data, whatever the code."""
    torch.manual_seed(0)
    model = DRLModel(edm_spec(sde), (1, 16, 16)).eval()
    with torch.no_grad():
        model.score_net.conv_out.weight.zero_()
        model.score_net.conv_out.bias.zero_()
    return model


def test_coefficients_closed_form():
    sigma = torch.tensor([0.01, 0.5, 3.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, SD)
    total = sigma ** 2 + SD ** 2
    torch.testing.assert_close(c_skip, SD ** 2 / total)
    torch.testing.assert_close(c_out, sigma * SD / total.sqrt())
    torch.testing.assert_close(c_in, 1 / total.sqrt())
    torch.testing.assert_close(c_noise, torch.log(sigma) / 4)
    # The target F = (x0 - c_skip x) / c_out has unit variance for N(0, SD^2) data at every sigma,
    # and lambda = 1 / c_out^2 (EDM's choice that makes the loss F's unweighted error).
    torch.testing.assert_close(edm_loss_weight(sigma, SD), 1 / c_out ** 2)
    target_var = ((1 - c_skip) ** 2 * SD ** 2 + c_skip ** 2 * sigma ** 2) / c_out ** 2
    torch.testing.assert_close(target_var, torch.ones_like(sigma))


@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_perfect_denoiser_of_gaussian_data_gives_the_closed_form_loss(sde):
    """E lambda ||D* - x0||^2 = lambda d SD^2 sigma^2 / (SD^2 + sigma^2) = d at every sigma."""
    model = zero_output_model(sde)
    d = 16 * 16
    x0 = SD * torch.randn(4096, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, parts = drl_loss(model, x0, model.spec.objective, torch.Generator().manual_seed(2))
    # mean of 4096 chi-square-like sums of d terms: std of the mean ~ sqrt(2 d / 4096) ~ 0.35
    assert parts["edm"] == pytest.approx(d, abs=2.0)


@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_score_is_the_exact_marginal_score_and_matches_the_denoiser(sde):
    """For N(0, SD^2) data, x_t ~ N(0, a^2 SD^2 + std^2): score -x_t / (a^2 SD^2 + std^2); and
    s = (a D - x_t) / std^2 with D the model's own denoised estimate."""
    model = zero_output_model(sde)
    t = torch.tensor([1e-3, 0.05, 0.3, 0.7, 1.0])
    xt = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    z = torch.randn(5, 4)
    a, std = model.sde.mean_coeff(t), model.sde.marginal_std(t)
    with torch.no_grad():
        score = model.score(xt, t, z)
        denoised = model.denoise(xt, t, z)
    exact = -xt / _bcast(a ** 2 * SD ** 2 + std ** 2, xt)
    torch.testing.assert_close(score, exact, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(score, (_bcast(a, xt) * denoised - xt) / _bcast(std ** 2, xt),
                               rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("sde", [VESDE(), VPSDE()], ids=["ve", "vp"])
def test_edm_sigma_round_trips_and_maps_the_kernel(sde):
    t = torch.linspace(0.01, 1.0, 50, dtype=torch.float64)
    sigma = sde.edm_sigma(t)
    torch.testing.assert_close(sde.t_from_edm_sigma(sigma), t)
    torch.testing.assert_close(sigma, sde.marginal_std(t) / sde.mean_coeff(t))


def test_score_parameterization_denoise_is_tweedie():
    torch.manual_seed(0)
    spec = parse_spec({"model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                                 "attn_resolutions": [], "latent_dim": 4}, "sde": {"kind": "vp"}})
    model = DRLModel(spec, (1, 16, 16)).eval()
    t = torch.tensor([0.2, 0.6])
    xt, z = torch.randn(2, 1, 16, 16), torch.randn(2, 4)
    with torch.no_grad():
        a, std = model.sde.mean_coeff(t), model.sde.marginal_std(t)
        expected = (xt + _bcast(std ** 2, xt) * model.score(xt, t, z)) / _bcast(a, xt)
        torch.testing.assert_close(model.denoise(xt, t, z), expected)


def test_unfitted_edm_model_refuses_to_run():
    torch.manual_seed(0)
    model = DRLModel(edm_spec(sigma_data=None), (1, 16, 16))
    with pytest.raises(RuntimeError, match="objective.sigma_data"):
        model.score(torch.zeros(1, 1, 16, 16), torch.tensor([0.5]), torch.zeros(1, 4))


def test_sigma_data_of_pixels_is_the_std_in_the_model_range():
    pixels = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(4))
    for data_range in ((0.0, 1.0), (-1.0, 1.0)):
        expected = to_model_range(pixels, data_range).double().std(unbiased=False).item()
        assert sigma_data_of_pixels(pixels, data_range) == pytest.approx(expected, rel=1e-6)   # float32 pixels


def test_edm_model_samples_the_gaussian_it_denoises():
    """The exact score of N(0, SD^2) data carried by the ODE from sigma_max gives std ~ SD."""
    model = zero_output_model("ve")
    result = sample(lambda x, t: model.score(x, t, torch.zeros(len(x), 4)), model.sde,
                    (4, 1, 16, 16), model.spec.sample.model_copy(update={"sampler": "ode",
                                                                         "steps": 200}),
                    torch.Generator().manual_seed(0), "cpu")
    assert torch.isfinite(result.images).all()
    assert result.images.std().item() == pytest.approx(SD, rel=0.15)


# --- t distributions -------------------------------------------------------------------------

def test_window_draws_uniform_on_the_window():
    spec = ObjectiveSpec(t_sampling="window", t_lo=0.3, t_hi=0.6)
    t = sample_t(20_000, spec, VESDE(), torch.Generator().manual_seed(5), "cpu").numpy()
    assert t.min() >= 0.3 and t.max() <= 0.6
    assert stats.kstest(t, stats.uniform(0.3, 0.3).cdf).pvalue > 1e-3
    assert stats.kstest(t, stats.uniform(0.3, 0.31).cdf).statistic > \
        stats.kstest(t, stats.uniform(0.3, 0.3).cdf).statistic


@pytest.mark.parametrize("sde", [VESDE(), VPSDE()], ids=["ve", "vp"])
def test_log_normal_draws_log_sigma_normal(sde):
    # p_std small enough that clamping to [t_eps, 1] is negligible for both SDEs.
    spec = ObjectiveSpec(t_sampling="log_normal", p_mean=-0.5, p_std=0.5)
    t = sample_t(20_000, spec, sde, torch.Generator().manual_seed(6), "cpu", torch.float64)
    log_sigma = torch.log(sde.edm_sigma(t)).numpy()
    assert stats.kstest(log_sigma, stats.norm(-0.5, 0.5).cdf).pvalue > 1e-3
    assert stats.kstest(log_sigma, stats.norm(-0.4, 0.5).cdf).pvalue < 1e-6


def test_window_and_parameterization_need_their_fields():
    with pytest.raises(SpecError, match="objective.t_lo and objective.t_hi are required"):
        parse_spec({"objective": {"t_sampling": "window"}})
    with pytest.raises(SpecError, match="objective.t_hi must exceed"):
        parse_spec({"objective": {"t_sampling": "window", "t_lo": 0.6, "t_hi": 0.3}})
    with pytest.raises(SpecError, match="objective.parameterization 'edm' needs model.kind"):
        parse_spec({"model": {"kind": "ae"}, "objective": {"parameterization": "edm"}})
    with pytest.raises(SpecError, match="train.decoder_finetune_steps needs model.kind"):
        parse_spec({"model": {"kind": "vdm"}, "train": {"decoder_finetune_steps": 5}})


# --- training: sigma_data from the data, the fine-tune phase ---------------------------------

def tiny_train_spec(**train):
    return parse_spec({
        "dataset": {"name": "digits", "train_limit": 128, "test_limit": 16},
        "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                  "attn_resolutions": [], "latent_dim": 4},
        "objective": {"parameterization": "edm", "t_sampling": "window", "t_lo": 0.3, "t_hi": 0.6},
        "train": {"iterations": 3, "batch_size": 8, "warmup": 2, "checkpoint_every": 1000,
                  "log_every": 1000, "device": "cpu", "seed": 1, **train},
    })


@pytest.fixture(scope="module")
def digits():
    return load_dataset(tiny_train_spec().dataset)


def test_training_fits_sigma_data_to_the_training_split(digits):
    result = train(tiny_train_spec(), digits, None)
    expected = sigma_data_of_pixels(digits.x_train, (0.0, 1.0))
    assert float(result.model.sigma_data) == pytest.approx(expected, rel=1e-6)
    assert 0.05 < expected < 0.6


def test_decoder_finetune_leaves_the_encoder_bit_identical(digits, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main_only = train(tiny_train_spec(), digits, None).model
        steps = []
        finetuned = train(tiny_train_spec(decoder_finetune_steps=3, log_every=1), digits,
                          tmp_path / "ckpt", progress=lambda p: steps.append((p.step, p.total))).model
    finally:
        torch.set_num_threads(threads)
    assert steps[-1] == (6, 6)
    encoder_a, encoder_b = main_only.encoder.state_dict(), finetuned.encoder.state_dict()
    assert all(torch.equal(encoder_a[k], encoder_b[k]) for k in encoder_a)
    score_a, score_b = main_only.score_net.state_dict(), finetuned.score_net.state_dict()
    assert any(not torch.equal(score_a[k], score_b[k]) for k in score_a)


def test_decoder_finetune_samples_t_over_the_whole_range(digits):
    """In the fine-tune phase the loss draws uniform t although the spec says window."""
    from drl_engine.registry import in_decoder_finetune
    spec = tiny_train_spec(decoder_finetune_steps=2)
    assert not in_decoder_finetune(spec, 2) and in_decoder_finetune(spec, 3)
    assert spec.train.total_steps == 5
    model = DRLModel(spec, (1, 16, 16))
    model.fit_to_data(digits.x_train)
    seen = []
    original = model.denoise
    model.denoise = lambda xt, t, z: (seen.append(t.clone()), original(xt, t, z))[1]
    from drl_engine.registry import training_loss
    gen = torch.Generator().manual_seed(0)
    training_loss(model, digits.x_train[:64], spec, gen, step=0)
    training_loss(model, digits.x_train[:64], spec, gen, step=3)
    window, finetune = seen
    assert window.min() >= 0.3 and window.max() <= 0.6
    assert finetune.min() < 0.3 and finetune.max() > 0.6
    assert not math.isnan(float(np.mean(finetune.numpy())))
