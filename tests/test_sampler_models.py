"""Every sampler on a real (tiny) DRLModel: both parameterizations, both SDEs, codes from a
grid or from encoding images, static and time-conditioned encoders. The exact-score tests are
in test_samplers.py; these check the samplers reach the network the way generate() binds it."""

from __future__ import annotations

import typing

import pytest
import torch

from drl_engine.generate import decode_codes, generate
from drl_engine.model import DRLModel
from drl_engine.sampling import SAMPLERS
from drl_engine.spec import SamplerName, parse_spec

SAMPLER_NAMES = list(typing.get_args(SamplerName))
SD = 0.3   # the zero-output edm model's Gaussian data std
# Few steps: the network is tiny but not free on a shared CPU.
STEPS = {"pc": 100, "euler_maruyama": 100, "ode": 100, "heun": 18, "dpm_solver_pp": 20,
         "ode_adaptive": 1}
# An untrained network's score is rough: ode_adaptive meets 1e-5 only in hundreds of steps.
LOOSE = {"rtol": 1e-3, "atol": 1e-3}


def tiny_spec(sde: str, parameterization: str = "score", encoder: str = "static", **sample):
    objective = ({"parameterization": "edm", "sigma_data": SD, "l1_weight": 0.0}
                 if parameterization == "edm" else {})
    return parse_spec({
        "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                  "attn_resolutions": [], "dropout": 0.0, "latent_dim": 4, "code_mlp_layers": 2,
                  "encoder": encoder},
        "sde": {"kind": sde},
        "objective": objective,
        "sample": sample,
    })


def zero_output_edm_model(sde: str) -> DRLModel:
    """An edm DRLModel whose network F outputs 0, so D = c_skip x: the optimal denoiser of
    N(0, SD^2) data, whatever the code (test_edm.py's)."""
    torch.manual_seed(0)
    model = DRLModel(tiny_spec(sde, "edm"), (1, 16, 16)).eval()
    with torch.no_grad():
        model.score_net.conv_out.weight.zero_()
        model.score_net.conv_out.bias.zero_()
    return model


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_edm_model_samples_the_gaussian_it_denoises(sde, sampler):
    model = zero_output_edm_model(sde)
    spec = model.spec.sample.model_copy(update={"sampler": sampler, "steps": STEPS[sampler]})
    result = decode_codes(model, spec, torch.zeros(8, 4), "cpu").result
    assert torch.isfinite(result.images).all()
    assert result.images.mean().item() == pytest.approx(0.0, abs=0.05)
    assert result.images.std().item() == pytest.approx(SD, rel=0.1)


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_codes_condition_every_sampler(sde, sampler):
    torch.manual_seed(0)
    model = DRLModel(tiny_spec(sde), (1, 16, 16)).eval()
    spec = model.spec.sample.model_copy(update={"sampler": sampler, "steps": 6, "t_init": 0.5,
                                                "prior": "uniform_gaussian", **LOOSE})
    codes = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    first, again, other = (decode_codes(model, spec, c, "cpu") for c in (codes, codes, -codes))
    assert torch.equal(first.images, again.images)
    assert not torch.allclose(first.images, other.images)
    planned = SAMPLERS[sampler].planned_nfe(first.result.steps, spec)
    assert first.result.nfe == (planned if planned is not None else first.result.nfe) > 0
    assert first.result.seconds > 0


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
@pytest.mark.parametrize("sde, parameterization", [("ve", "score"), ("vp", "edm")])
def test_a_time_conditioned_encoder_is_asked_at_every_t_the_score_is(sde, parameterization,
                                                                      sampler):
    torch.manual_seed(0)
    model = DRLModel(tiny_spec(sde, parameterization, "time_conditioned"), (1, 16, 16)).eval()
    encoded_at, scored_at = [], []
    encode, score = model.encode, model.score
    model.encode = lambda x0, t=None: encoded_at.append(t[0].item()) or encode(x0, t)
    model.score = lambda x, t, z: scored_at.append(t[0].item()) or score(x, t, z)
    spec = model.spec.sample.model_copy(update={"sampler": sampler, "steps": 4, "count": 2,
                                                **LOOSE})
    pixels = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(2))
    gen = generate(model, spec, pixels, "cpu")
    assert torch.isfinite(gen.images).all() and gen.images.shape == (2, 1, 16, 16)
    assert encoded_at == scored_at and len(scored_at) == gen.result.nfe
