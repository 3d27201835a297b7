"""The score U-Net, the encoder and DRLModel: shapes, conditioning, attention placement."""

import math

import pytest
import torch

from drl_engine.model import DRLModel
from drl_engine.nets import AttnBlock, Encoder, GaussianFourierEmbedding, ScoreUNet, Upsample, sinusoidal_embedding
from drl_engine.nets.layers import ResBlock, group_norm, level_sides
from drl_engine.spec import ModelSpec, SpecError, parse_spec

IMAGE_SHAPES = [(1, 28, 28), (1, 16, 16), (3, 32, 32)]


def tiny_spec(sde: str = "ve", **model) -> "ExperimentSpec":  # noqa: F821
    base = dict(base_channels=8, channel_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[],
                dropout=0.0, latent_dim=4, code_mlp_layers=2)
    return parse_spec({"model": {**base, **model}, "sde": {"kind": sde}})


def tiny_model(image_shape=(1, 28, 28), sde="ve", seed=0, **model) -> DRLModel:
    torch.manual_seed(seed)
    return DRLModel(tiny_spec(sde, **model), image_shape).eval()


@pytest.mark.parametrize("image_shape", IMAGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("sde", ["ve", "vp"])
@pytest.mark.parametrize("encoder", ["static", "time_conditioned"])
@pytest.mark.parametrize("conditioning", ["bias", "scale_shift"])
def test_shapes(image_shape, sde, encoder, conditioning):
    # kind alternates so both code heads are covered without doubling the grid.
    kind = "vdrl" if (encoder == "static") == (conditioning == "bias") else "drl"
    model = tiny_model(image_shape, sde, encoder=encoder, conditioning=conditioning, kind=kind)
    x0 = torch.rand(3, *image_shape)
    t = torch.tensor([0.1, 0.5, 0.9])
    mean, logvar = model.encoder_output(x0, t)
    assert mean.shape == (3, 4)
    assert (logvar is not None) == (kind == "vdrl")
    if logvar is not None:
        assert logvar.shape == (3, 4)
    z = model.encode(x0, t)
    assert torch.equal(z, mean)
    score = model.score(x0, t, z)
    assert score.shape == x0.shape
    assert torch.isfinite(score).all()


def test_time_embedding_follows_the_sde():
    assert tiny_model(sde="ve").score_net.temb.kind == "fourier"
    assert tiny_model(sde="vp").score_net.temb.kind == "sinusoidal"


@pytest.mark.parametrize("sde", ["ve", "vp"])
@pytest.mark.parametrize("conditioning", ["bias", "scale_shift"])
def test_code_changes_the_score_at_initialisation(sde, conditioning):
    model = tiny_model(sde=sde, conditioning=conditioning)
    xt = torch.randn(2, 1, 28, 28)
    t = torch.tensor([0.3, 0.7])
    z1, z2 = torch.randn(2, 4), torch.randn(2, 4)
    with torch.no_grad():
        s1, s2 = model.score(xt, t, z1), model.score(xt, t, z2)
    rel = (s1 - s2).norm() / s1.norm()
    assert rel > 1e-2


def test_gradients_reach_the_encoder_through_the_score():
    model = tiny_model(encoder="time_conditioned")
    x0 = torch.rand(2, 1, 28, 28)
    t = torch.tensor([0.2, 0.8])
    model.score(x0 + 0.1 * torch.randn_like(x0), t, model.encode(x0, t)).pow(2).sum().backward()
    grads = [p.grad for p in model.encoder.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert model.encoder.temb.mlp[0].weight.grad.abs().sum() > 0


def test_static_encoder_ignores_t_and_time_conditioned_uses_it():
    x0 = torch.rand(2, 1, 28, 28)
    static = tiny_model(encoder="static")
    with torch.no_grad():
        a = static.encode(x0, torch.tensor([0.1, 0.1]))
        assert torch.equal(a, static.encode(x0, torch.tensor([0.9, 0.9])))
        assert torch.equal(a, static.encode(x0))
    timed = tiny_model(encoder="time_conditioned")
    with torch.no_grad():
        b = timed.encode(x0, torch.tensor([0.1, 0.1]))
        c = timed.encode(x0, torch.tensor([0.9, 0.9]))
        assert not torch.allclose(b, c, rtol=1e-3, atol=1e-4)
        # A float t is broadcast over the batch.
        assert torch.equal(timed.encode(x0, 0.1), b)
    with pytest.raises(ValueError, match="needs t"):
        timed.encode(x0)


def test_vdrl_returns_logvar_and_encode_is_the_mean():
    model = tiny_model(kind="vdrl", encoder="time_conditioned")
    assert model.variational and model.time_conditioned
    x0, t = torch.rand(2, 1, 28, 28), torch.tensor([0.5, 0.5])
    with torch.no_grad():
        mean, logvar = model.encoder_output(x0, t)
        assert logvar is not None and logvar.shape == mean.shape == (2, 4)
        assert not torch.equal(mean, logvar)
        assert torch.equal(model.encode(x0, t), mean)
    drl = tiny_model(kind="drl")
    assert not drl.variational
    assert drl.encoder_output(x0, t)[1] is None


def _attention_sides(module) -> list[int]:
    return sorted(m.resolution for m in module.modules() if isinstance(m, AttnBlock))


def test_attention_exactly_at_configured_resolutions():
    # 28x28 with channel_mult [1, 2, 2] has sides 28, 14, 7.
    model = tiny_model(attn_resolutions=[14, 7], num_res_blocks=2)
    # Down: 2 per level; mid: 1 at the lowest side (7); up: 1 per level.
    assert _attention_sides(model.score_net) == [7] * 4 + [14] * 3
    assert _attention_sides(model.encoder) == [7] * 2 + [14] * 2
    model = tiny_model(attn_resolutions=[28])
    assert _attention_sides(model.score_net) == [28, 28]
    assert _attention_sides(tiny_model(attn_resolutions=[])) == []


def test_unreachable_attention_side_warns_and_is_ignored():
    with pytest.warns(UserWarning, match=r"model.attn_resolutions: \[8\]"):
        model = tiny_model(attn_resolutions=[8, 7])
    assert set(_attention_sides(model)) == {7}


def test_odd_sizes_round_trip():
    # [1,1,1,1] on 28: sides 28, 14, 7, 4; upsampling must return 4 -> 7 -> 14 -> 28.
    assert level_sides(28, 4) == [28, 14, 7, 4]
    model = tiny_model(channel_mult=[1, 1, 1, 1], attn_resolutions=[4])
    x = torch.rand(2, 1, 28, 28)
    assert model.score(x, torch.rand(2), torch.randn(2, 4)).shape == x.shape


def test_upsample_resizes_to_the_skip():
    up = Upsample(4)
    assert up(torch.randn(1, 4, 4, 4), (7, 7)).shape == (1, 4, 7, 7)
    assert up(torch.randn(1, 4, 7, 7)).shape == (1, 4, 14, 14)


def test_gaussian_fourier_embedding_closed_form():
    torch.manual_seed(0)
    emb = GaussianFourierEmbedding(5, scale=16.0)
    assert "W" not in dict(emb.named_parameters()) and "W" in emb.state_dict()
    x = torch.tensor([-1.3, 0.0, 2.0])
    expected = torch.cat([torch.sin(2 * math.pi * x[:, None] * emb.W),
                          torch.cos(2 * math.pi * x[:, None] * emb.W)], dim=1)
    torch.testing.assert_close(emb(x), expected)
    assert emb.W.std() > 4  # scale 16, not 1


def test_sinusoidal_embedding_closed_form():
    x = torch.tensor([0.0, 999.0 * 0.5])
    emb = sinusoidal_embedding(x, 6)
    torch.testing.assert_close(emb[0], torch.tensor([0.0, 0, 0, 1, 1, 1]))
    freqs = torch.tensor([1.0, 10_000 ** -0.5, 1e-4])
    torch.testing.assert_close(emb[1], torch.cat([torch.sin(499.5 * freqs), torch.cos(499.5 * freqs)]))
    assert sinusoidal_embedding(x, 7).shape == (2, 7)


@pytest.mark.parametrize("channels", [4, 8, 12, 24, 96, 136, 200])
def test_group_norm_divides_channels(channels):
    gn = group_norm(channels)
    assert channels % gn.num_groups == 0 and gn.num_groups <= 32


def test_resblock_conditioning_modes():
    x, cond = torch.randn(2, 8, 5, 5), torch.randn(2, 16)
    bias = ResBlock(8, 16, 16, conditioning="bias")
    assert bias.cond_proj.out_features == 16 and bias(x, cond).shape == (2, 16, 5, 5)
    adagn = ResBlock(8, 16, 16, conditioning="scale_shift")
    assert adagn.cond_proj.out_features == 32 and adagn(x, cond).shape == (2, 16, 5, 5)
    static = ResBlock(8, 8, None)
    assert static.cond_proj is None and static(x, None).shape == x.shape
    with pytest.raises(ValueError, match="needs `cond`"):
        bias(x, None)


def test_same_seed_same_weights():
    a, b = tiny_model(seed=3), tiny_model(seed=3)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_code_shape_is_checked():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"code: expected shape \(2, 4\)"):
        model.score(torch.rand(2, 1, 28, 28), torch.rand(2), torch.randn(2, 5))


def test_unsupported_kind_and_bad_image_shape():
    spec = tiny_spec()
    bad = spec.model_copy(update={"model": spec.model.model_copy(update={"kind": "vdm"})})
    with pytest.raises(SpecError, match="model.kind"):
        DRLModel(bad, (1, 28, 28))
    with pytest.raises(ValueError, match="image_shape"):
        DRLModel(spec, (1, 28, 14))


def test_default_mnist_net_runs():
    torch.manual_seed(0)
    spec = parse_spec({})
    model = DRLModel(spec, (1, 28, 28)).eval()
    # Appendix D's MNIST network: 28x28x32 and 14x14x64 feature maps, 2 residual blocks per
    # level, no attention.
    assert model.score_net.down.sides == [28, 14] and model.score_net.down.out_channels == 64
    assert [len(stage.blocks) for stage in model.score_net.down.levels] == [2, 2]
    assert _attention_sides(model.score_net) == []
    n_score = sum(p.numel() for p in model.score_net.parameters())
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    print(f"default MNIST spec: score net {n_score:,} params, encoder {n_enc:,} params")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert model.score(x, torch.rand(2), model.encode(x)).shape == x.shape


def test_networks_usable_standalone():
    spec = ModelSpec(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[8],
                     latent_dim=3)
    net = ScoreUNet(3, 16, spec, "sinusoidal")
    enc = Encoder(3, 16, spec, "sinusoidal", time_conditioned=False, variational=True)
    x = torch.rand(2, 3, 16, 16)
    mean, logvar = enc(x, None)
    assert net(x, torch.tensor([10.0, 500.0]), mean).shape == x.shape and logvar.shape == (2, 3)
