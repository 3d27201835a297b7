"""The paper's baselines (ae, vae, dae, cdae, simclr_gauss) as model kinds: build, train, encode."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import yaml

from drl_cli.main import main
from drl_engine.baselines import BaselineModel, nt_xent
from drl_engine.checkpoint import latest_checkpoint, load_model
from drl_engine.datasets import load_dataset
from drl_engine.encode import encode_at
from drl_engine.registry import build_model, training_loss
from drl_engine.spec import BASELINE_KINDS, SpecError, has_encoder, has_sampler, parse_spec

TINY_MODEL = {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
              "latent_dim": 4, "dropout": 0.0}
SHAPE = (1, 8, 8)
CPU = torch.device("cpu")


def encoder_for(kind: str) -> str:
    return "time_conditioned" if kind == "cdae" else "static"


def tiny_spec(kind: str, **sections):
    return parse_spec({"model": {**TINY_MODEL, "kind": kind, "encoder": encoder_for(kind)},
                       "train": {"device": "cpu"}, **sections})


def tiny_model(kind: str, seed: int = 0) -> BaselineModel:
    torch.manual_seed(seed)
    return build_model(tiny_spec(kind), SHAPE)


def pixels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *SHAPE), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def test_spec_accepts_each_baseline_and_fixes_its_encoder():
    for kind in BASELINE_KINDS:
        assert tiny_spec(kind).model.kind == kind
        assert has_encoder(kind) and not has_sampler(kind)
    assert has_sampler("drl") and has_sampler("vdm")
    with pytest.raises(SpecError, match="model.encoder: the cdae baseline's encoder is 'time_conditioned'"):
        parse_spec({"model": {"kind": "cdae"}})
    with pytest.raises(SpecError, match="model.encoder: the ae baseline's encoder is 'static'"):
        parse_spec({"model": {"kind": "ae", "encoder": "time_conditioned"}})


@pytest.mark.parametrize("kind", BASELINE_KINDS)
def test_each_baseline_trains_its_loss_falls_on_a_fixed_batch(kind):
    model = tiny_model(kind)
    spec = model.spec
    x = pixels(16)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for step in range(25):
        # The same batch, t and noise every step: only the weights change.
        loss, parts = training_loss(model, x, spec, torch.Generator().manual_seed(1), step)
        assert math.isfinite(loss.item()) and parts["loss"] == pytest.approx(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_nt_xent_matches_a_hand_computation():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])
    tau = 0.5
    v = [u / np.linalg.norm(u) for u in np.concatenate([a.numpy(), b.numpy()])]
    positive = {0: 2, 1: 3, 2: 0, 3: 1}
    total = 0.0
    for i in range(4):
        sims = {k: float(v[i] @ v[k]) / tau for k in range(4) if k != i}
        total += -math.log(math.exp(sims[positive[i]]) / sum(math.exp(s) for s in sims.values()))
    assert nt_xent(a, b, tau).item() == pytest.approx(total / 4, rel=1e-6)
    # Identical views that are orthogonal to every other view: the positive dominates.
    eye = torch.eye(3) * 5
    assert nt_xent(eye, eye, 0.05).item() < 1e-6
    with pytest.raises(ValueError, match="nt_xent: expected two"):
        nt_xent(a, b[:1], tau)


@pytest.mark.parametrize("kind", BASELINE_KINDS)
def test_codes_on_the_t_grid_are_t_independent_exactly_for_ae_and_vae(kind):
    model = tiny_model(kind).eval()
    x = pixels(10)
    grid = [0.0, 0.5, 1.0]
    enc = encode_at(model, x, grid, 4, CPU)
    assert sorted(enc.by_t) == grid
    for codes in enc.by_t.values():
        assert codes.shape == (10, 4) and codes.dtype == np.float32 and np.isfinite(codes).all()
    if kind in ("ae", "vae"):
        assert enc.t_independent
        assert enc.by_t[0.0] is enc.by_t[1.0]
    else:
        assert not enc.t_independent
        assert not np.allclose(enc.by_t[0.0], enc.by_t[0.5])
        assert not np.allclose(enc.by_t[0.5], enc.by_t[1.0])
    # Seeded: the same call gives the same codes, noisy codes included.
    again = encode_at(model, x, grid, 4, CPU)
    for t in grid:
        np.testing.assert_array_equal(enc.by_t[t], again.by_t[t])
    if model.noisy_code:
        other = encode_at(model, x, grid, 4, CPU, seed=1)
        assert not np.allclose(enc.by_t[0.5], other.by_t[0.5])


def test_noisy_codes_need_a_generator_and_low_noise_codes_match_the_clean_image():
    model = tiny_model("dae").eval()
    x0 = model.pixels_to_model_range(pixels(4))
    with pytest.raises(ValueError, match="generator: the dae code at t is E"):
        model.encode(x0, 0.5)
    # At sigma(0) = 0.01 the noisy input is x0 / sqrt(1 + 1e-4) up to 1% noise: close to E(x0).
    near = model.encode(x0, 0.0, generator=torch.Generator().manual_seed(0))
    clean = model.encoder(x0, None)[0]
    assert torch.allclose(near, clean, atol=0.05 * clean.abs().max().item())


def test_reconstructions_have_the_image_shape_and_simclr_has_none():
    for kind in ("ae", "vae", "dae", "cdae"):
        model = tiny_model(kind).eval()
        x0 = model.pixels_to_model_range(pixels(3))
        out = model.reconstruct(x0, 0.5, torch.Generator().manual_seed(0))
        assert out.shape == x0.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="'simclr_gauss' has no decoder"):
        tiny_model("simclr_gauss").reconstruct(x0, 0.5, torch.Generator())


def test_drl_run_trains_encodes_and_probes_a_dae_on_digits(tmp_path):
    spec = {
        "dataset": {"name": "digits", "train_limit": 200, "test_limit": 60},
        "model": {**TINY_MODEL, "kind": "dae"},
        "train": {"iterations": 12, "batch_size": 16, "warmup": 4, "checkpoint_every": 12,
                  "log_every": 6, "device": "cpu"},
        "evaluate": {"t_grid": [0.0, 0.5, 1.0], "label_budgets": [20, 50], "probe_train_limit": 100,
                     "probes": ["svc", "linear", "silhouette"]},
        "sample": {"count": 4},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 0

    with (out / "probes.csv").open() as f:
        rows = list(csv.DictReader(f))
    # The baseline's rows, then its untrained control's (probed the same way).
    assert [(r["encoder"], r["t"]) for r in rows] == [
        (encoder, t) for encoder in ("trained", "random_init") for t in ("0.000", "0.500", "1.000")]
    for row in rows:
        for col in ("svc_20", "svc_50", "svc_20_std", "svc_50_std", "linear"):
            assert 0.0 <= float(row[col]) <= 1.0 and 0.0 <= float(row[f"val_{col}"]) <= 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 12 and math.isfinite(metrics["train"]["final_loss"])
    assert metrics["encode"]["t_independent"] is False
    assert metrics["sample"] is None and metrics["reconstructions"]["finite"] is True
    assert (out / "reconstructions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "samples.png").exists()

    # The checkpoint loads back through the registry and re-encodes to the stored embeddings.
    model = load_model(latest_checkpoint(out / "checkpoints"), CPU)
    assert isinstance(model, BaselineModel) and model.kind == "dae"
    ds = load_dataset(parse_spec(spec).dataset)
    again = encode_at(model, ds.x_test, [0.5], 500, CPU)
    np.testing.assert_allclose(again.by_t[0.5], np.load(out / "embeddings" / "test_t=0.500.npy"),
                               rtol=1e-5, atol=1e-6)
