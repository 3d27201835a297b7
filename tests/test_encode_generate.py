"""Encoding over t and conditional generation with each code source, on a tiny real model."""

import numpy as np
import pytest
import torch

from drl_engine.encode import embedding_filename, encode_at, t_key
from drl_engine.generate import bind_score, generate, grid_codes
from drl_engine.model import DRLModel
from drl_engine.spec import SampleSpec, parse_spec

CPU = torch.device("cpu")


def tiny_model(**model) -> DRLModel:
    spec = parse_spec({"model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                                 "attn_resolutions": [], "latent_dim": 4, **model}})
    torch.manual_seed(0)
    return DRLModel(spec, (1, 8, 8)).eval()


def images(n=10) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def test_static_encoder_is_encoded_once_and_shared_across_t():
    enc = encode_at(tiny_model(), images(), [0.1, 0.5, 0.5000001, 1.0], batch_size=3, device=CPU)
    assert enc.t_independent and sorted(enc.by_t) == [0.1, 0.5, 1.0]
    arrays = list(enc.by_t.values())
    assert all(a is arrays[0] for a in arrays) and arrays[0].shape == (10, 4)


def test_time_conditioned_codes_depend_on_t_and_not_on_batching():
    model = tiny_model(encoder="time_conditioned")
    enc = encode_at(model, images(), [0.0, 1.0], batch_size=4, device=CPU)
    assert not enc.t_independent
    assert not np.allclose(enc.by_t[0.0], enc.by_t[1.0])
    whole = encode_at(model, images(), [1.0], batch_size=100, device=CPU)
    np.testing.assert_allclose(whole.by_t[1.0], enc.by_t[1.0], atol=1e-5)


def test_t_key_and_file_names():
    assert t_key(0.1 + 0.2) == t_key(0.3) == 0.3
    assert embedding_filename("test", 0.5) == "test_t=0.500.npy"


def test_grid_codes_cover_the_square_row_major():
    codes = grid_codes(16, 2.0, CPU)
    assert codes.shape == (16, 2)
    assert codes[0].tolist() == [-2.0, 2.0] and codes[-1].tolist() == [2.0, -2.0]
    assert grid_codes(10, 1.0, CPU).shape == (9, 2)  # largest square that fits


def test_time_conditioned_reconstruction_re_encodes_at_each_step():
    model = tiny_model(encoder="time_conditioned")
    seen = []
    encode = model.encode
    model.encode = lambda x0, t=None: seen.append(None if t is None else float(t[0])) or encode(x0, t)
    x0 = torch.rand(2, 1, 8, 8)
    score = bind_score(model, x0, None)
    score(torch.rand(2, 1, 8, 8), torch.full((2,), 0.3))
    score(torch.rand(2, 1, 8, 8), torch.full((2,), 0.7))
    assert seen == pytest.approx([0.3, 0.7])


@pytest.mark.parametrize("model_kw, sample_kw, n", [
    ({}, {"code_source": "encoded", "count": 3}, 3),
    ({"latent_dim": 2}, {"code_source": "grid", "count": 4}, 4),
    ({"kind": "vdrl"}, {"code_source": "prior", "count": 5}, 5),
])
def test_generate_each_code_source_is_finite_and_seeded(model_kw, sample_kw, n):
    model = tiny_model(**model_kw)
    spec = SampleSpec(steps=6, **sample_kw)
    a = generate(model, spec, images(), CPU)
    b = generate(model, spec, images(), CPU)
    assert a.images.shape == (n, 1, 8, 8) and torch.isfinite(a.images).all()
    assert a.images.min() >= 0 and a.images.max() <= 1
    assert torch.equal(a.images, b.images)
    assert (a.references is not None) == (sample_kw["code_source"] == "encoded")
    other = generate(model, spec.model_copy(update={"seed": 1}), images(), CPU)
    assert not torch.equal(a.images, other.images)


def test_box_grid_covers_the_box_with_z0_rightwards_and_z1_upwards():
    from drl_engine.generate import box_grid_codes
    codes = box_grid_codes(3, (-6.0, -9.0), (-5.0, -7.0), "cpu")
    assert codes.shape == (9, 2)
    assert codes[0].tolist() == [-6.0, -7.0]      # top-left: smallest z[0], largest z[1]
    assert codes[2].tolist() == [-5.0, -7.0]      # top-right
    assert codes[-1].tolist() == [-5.0, -9.0]     # bottom-right
    assert codes[4].tolist() == [-5.5, -8.0]      # centre of the box, not the origin
