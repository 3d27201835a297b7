"""The code-usage diagnostic: closed forms on stub score models, a real DRLModel that ignores
its code, the held-out batch and its permutations, and the table's CSV/JSON round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from drl_engine.code_usage import (HeldOutBatch, class_derangement, code_usage_skip_reason,
                                   derangement, held_out_batch, measure_code_usage)
from drl_engine.code_usage_table import (CSV_COLUMNS, CodeUsage, CodeUsageRow,
                                         read_code_usage_csv, write_code_usage_csv)
from drl_engine.datasets import to_model_range
from drl_engine.model import DRLModel
from drl_engine.plots import plot_code_usage
from drl_engine.sde import _bcast, build_sde
from drl_engine.spec import ExperimentSpec, parse_spec

CPU = torch.device("cpu")
T_GRID = [0.0, 0.25, 0.5, 0.75, 1.0]
CLASSES = 3


def spec_for(sde: str = "ve", objective: dict | None = None, **evaluate) -> ExperimentSpec:
    return parse_spec({
        "sde": {"kind": sde}, "objective": objective or {},
        "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                  "attn_resolutions": [], "latent_dim": 4},
        "evaluate": {"t_grid": T_GRID, "batch_size": 16, **evaluate}})


def toy_images(n: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 (n, 1, 4, 4), int64 labels): class k has pixel (0, 0) = 100 k, the rest noise."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % CLASSES
    x = torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8)
    x[:, 0, 0, 0] = (100 * labels).to(torch.uint8)
    return x, labels


class GaussianScoreModel:
    """A score with a closed form: x_0 | z ~ N(m(z), v I), so x_t | z ~ N(a m(z), a^2 v + std^2)
    and s(x_t, t, z) = -(x_t - a m(z)) / (a^2 v + std^2); `denoise` is Tweedie's formula on it.
    `code(x0)` is the encoder."""

    def __init__(self, sde: str, code, mean_of_code, v: float):
        self.sde = build_sde(spec_for(sde).sde)
        self.code, self.mean_of_code, self.v = code, mean_of_code, v

    def eval(self):
        return self

    def pixels_to_model_range(self, pixels: torch.Tensor) -> torch.Tensor:
        return to_model_range(pixels, self.sde.data_range)

    def encode(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.code(x0)

    def denoise(self, xt: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        a = _bcast(self.sde.mean_coeff(t), xt)
        std = _bcast(self.sde.marginal_std(t), xt)
        score = -(xt - a * self.mean_of_code(z)) / (a ** 2 * self.v + std ** 2)
        return (xt + std ** 2 * score) / a


def batch_of(images: torch.Tensor, labels: torch.Tensor | None) -> HeldOutBatch:
    return held_out_batch(images, labels, spec_for().evaluate)


def squared_error(x0: torch.Tensor, index: np.ndarray) -> float:
    return float((x0[torch.as_tensor(index)] - x0).double().pow(2).mean())


# --- the diagnostic ------------------------------------------------------------------------

@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_a_score_that_ignores_the_code_gains_exactly_nothing(sde: str) -> None:
    images, labels = toy_images()
    model = GaussianScoreModel(sde, code=lambda x0: x0.flatten(1),
                               mean_of_code=lambda z: torch.zeros(len(z), 1, 4, 4), v=0.1)
    usage = measure_code_usage(model, batch_of(images, labels), spec_for(sde), CPU, step=7)
    assert usage.step == 7 and usage.images == 60 and usage.t_values == T_GRID
    for row in usage.rows:
        assert row.error_true > 0 and math.isfinite(row.error_true)
        assert row.code_gain == 0.0 and row.class_gain == 0.0


@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_a_perfect_instance_code_denoises_exactly_and_shuffling_costs_the_distance(sde: str) -> None:
    """z = x_0 and v = 0: Tweedie gives x_0 itself, so error_true = 0 and a shuffled code's
    error is exactly the mean squared distance to the image whose code it got."""
    images, labels = toy_images()
    model = GaussianScoreModel(sde, code=lambda x0: x0.flatten(1),
                               mean_of_code=lambda z: z.reshape(-1, 1, 4, 4), v=0.0)
    batch = batch_of(images, labels)
    usage = measure_code_usage(model, batch, spec_for(sde), CPU, step=0)
    x0 = model.pixels_to_model_range(batch.images)
    shuffled = squared_error(x0, batch.shuffled)
    class_shuffled = squared_error(x0, batch.class_shuffled)
    assert 0 < class_shuffled < shuffled   # other images of its class are nearer (pixel 0)
    for row in usage.rows:
        assert row.error_true == pytest.approx(0.0, abs=1e-9)
        assert row.error_shuffled == pytest.approx(shuffled, rel=1e-4)
        assert row.error_class_shuffled == pytest.approx(class_shuffled, rel=1e-4)
        assert row.code_gain > 0 and 0 < row.class_gain < row.code_gain


@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_a_class_only_code_is_all_class_gain(sde: str) -> None:
    """z = one-hot class and x_0 | z ~ N(class mean, v): a class-shuffled code is the same code,
    so error_class_shuffled == error_true exactly and class_gain == code_gain > 0, growing with
    t (the noisier x_t, the more the class mean matters)."""
    images, labels = toy_images()
    model = GaussianScoreModel(sde, code=None, mean_of_code=None, v=0.05)
    x0_all = model.pixels_to_model_range(images)
    class_means = torch.stack([x0_all[labels == k].mean(0) for k in range(CLASSES)])
    lo, hi = model.sde.data_range

    def class_code(x0: torch.Tensor) -> torch.Tensor:
        pixel = torch.round((x0[:, 0, 0, 0] - lo) / (hi - lo) * 255)
        return torch.nn.functional.one_hot((pixel / 100).round().long(), CLASSES).float()

    model.code = class_code
    model.mean_of_code = lambda z: (z @ class_means.flatten(1)).reshape(-1, 1, 4, 4)
    usage = measure_code_usage(model, batch_of(images, labels), spec_for(sde), CPU, step=0)
    for row in usage.rows:
        assert row.error_class_shuffled == row.error_true
        assert row.class_gain == row.code_gain > 0
    gains = [row.code_gain for row in usage.rows]
    assert gains[-1] > gains[0]


def test_without_labels_there_is_no_class_column() -> None:
    images, _ = toy_images()
    model = GaussianScoreModel("ve", code=lambda x0: x0.flatten(1),
                               mean_of_code=lambda z: z.reshape(-1, 1, 4, 4), v=0.0)
    usage = measure_code_usage(model, batch_of(images, None), spec_for(), CPU, step=0)
    assert all(row.error_class_shuffled is None and row.class_gain is None for row in usage.rows)
    assert all(row.code_gain > 0 for row in usage.rows)


def tiny_drl_model(spec: ExperimentSpec, **model) -> DRLModel:
    spec = spec.model_copy(update={"model": spec.model.model_copy(update=model)})
    torch.manual_seed(0)
    return DRLModel(spec, (1, 8, 8))


@pytest.mark.parametrize("encoder, parameterization", [
    ("static", "score"), ("time_conditioned", "score"), ("time_conditioned", "edm")])
def test_a_drl_model_with_its_code_cut_off_gains_nothing(encoder: str, parameterization: str) -> None:
    """DRLModel with the code MLP's last layer zeroed: the code never reaches the U-Net."""
    images = torch.randint(0, 256, (20, 1, 8, 8), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    labels = torch.arange(20) % 2
    spec = spec_for("vp", {"parameterization": parameterization, "sigma_data": 0.5},
                    t_grid=[0.0, 0.5, 1.0])
    model = tiny_drl_model(spec, encoder=encoder)
    batch = held_out_batch(images, labels, spec.evaluate)
    used = measure_code_usage(model, batch, spec, CPU, step=0)
    assert not model.training   # measured in eval mode (no dropout)
    assert any(row.code_gain != 0 for row in used.rows)   # the untouched model reads its code
    with torch.no_grad():
        model.score_net.code_mlp[-1].weight.zero_()
    cut = measure_code_usage(model, batch, spec, CPU, step=0)
    for row in cut.rows:
        assert math.isfinite(row.error_true) and row.code_gain == 0.0 and row.class_gain == 0.0


def test_skip_reasons_name_the_kind_the_field_and_the_test_split() -> None:
    images, _ = toy_images()
    assert code_usage_skip_reason(spec_for(), images) is None
    ae = parse_spec({"model": {"kind": "ae"}})
    assert "'ae'" in code_usage_skip_reason(ae, images)
    assert "evaluate.code_usage_images" in code_usage_skip_reason(spec_for(code_usage_images=0), images)
    assert "2 test images" in code_usage_skip_reason(spec_for(), images[:1])


# --- the held-out batch ----------------------------------------------------------------------

def test_held_out_batch_is_stratified_seeded_and_permutes_without_fixed_points() -> None:
    images, labels = toy_images(300)
    evaluate = spec_for(code_usage_images=30, seed=4).evaluate
    batch = held_out_batch(images, labels, evaluate)
    assert len(batch.images) == 30 and np.bincount(batch.labels).tolist() == [10, 10, 10]
    n = np.arange(30)
    assert sorted(batch.shuffled) == list(n) and not (batch.shuffled == n).any()
    assert sorted(batch.class_shuffled) == list(n) and not (batch.class_shuffled == n).any()
    assert (batch.labels[batch.class_shuffled] == batch.labels).all()
    again = held_out_batch(images, labels, evaluate)
    assert torch.equal(again.images, batch.images)
    assert np.array_equal(again.shuffled, batch.shuffled)
    other = held_out_batch(images, labels, spec_for(code_usage_images=30, seed=5).evaluate)
    assert not np.array_equal(other.shuffled, batch.shuffled)
    # More images asked for than the test split holds: all of them.
    assert len(held_out_batch(images[:12], labels[:12], evaluate).images) == 12


def test_derangements_of_tiny_sets() -> None:
    rng = np.random.default_rng(0)
    assert derangement(0, rng).tolist() == [] and derangement(1, rng).tolist() == [0]
    assert derangement(2, rng).tolist() == [1, 0]
    # A class of one keeps its own index; the others move within their class.
    assert class_derangement(np.array([0, 1, 1, 2]), rng).tolist() == [0, 2, 1, 3]


# --- the table --------------------------------------------------------------------------------

def sample_series() -> list[CodeUsage]:
    return [CodeUsage(step=10, images=64, rows=[CodeUsageRow(0.0, 0.5, 0.75, 0.625),
                                                CodeUsageRow(0.5, 0.25, math.nan, 0.125)]),
            CodeUsage(step=20, images=64, rows=[CodeUsageRow(0.0, 0.5, 0.5, None),
                                                CodeUsageRow(0.5, 0.125, 1.5, 1.0)])]


def test_gains_json_round_trip_and_nan_as_null() -> None:
    usage = sample_series()[0]
    assert usage.rows[0].code_gain == 0.25 and usage.rows[0].class_gain == 0.125
    d = usage.to_dict()
    assert d["rows"][1] == {"t": 0.5, "error_true": 0.25, "error_shuffled": None,
                            "error_class_shuffled": 0.125, "code_gain": None, "class_gain": None}
    back = CodeUsage.from_dict(d)
    assert back.to_dict() == d and back.step == 10 and back.images == 64
    assert math.isnan(back.rows[1].error_shuffled)
    assert [r["step"] for r in usage.to_rows()] == [10, 10]
    with pytest.raises(ValueError, match="error_true"):
        CodeUsageRow.from_dict({"t": 0.5})


def test_csv_round_trip_is_exact(tmp_path) -> None:
    series = sample_series()
    # Errors that agree in their first 12 digits: the gain survives the CSV.
    series[1].rows[1] = CodeUsageRow(0.5, 3488.576025008583, 3488.576025008584, 1.0)
    path = tmp_path / "code_usage.csv"
    write_code_usage_csv(series, path)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert lines[1] == "10,0.000,0.5,0.75,0.625,0.25,0.125"
    assert lines[3] == "20,0.000,0.5,0.5,,0.0,"   # no labels: empty class cells
    back = read_code_usage_csv(path)
    assert [u.step for u in back] == [10, 20]
    assert [[r.to_dict() for r in u.rows] for u in back] == [[r.to_dict() for r in u.rows] for u in series]
    assert back[1].rows[1].code_gain == series[1].rows[1].code_gain > 0
    path.write_text("t,error\n0.5,1\n")
    with pytest.raises(ValueError, match="step,t,error_true"):
        read_code_usage_csv(path)


def test_plot_has_a_class_panel_only_with_labels(tmp_path) -> None:
    series = sample_series()
    plot_code_usage(series, tmp_path / "both.png", title="toy")
    unlabelled = [CodeUsage(step=5, rows=[CodeUsageRow(0.0, 0.5, 0.75), CodeUsageRow(1.0, 0.5, 0.5)])]
    plot_code_usage(unlabelled, tmp_path / "one.png")
    with Image.open(tmp_path / "both.png") as both, Image.open(tmp_path / "one.png") as one:
        assert both.format == one.format == "PNG" and both.width > one.width
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_code_usage([], tmp_path / "none.png")
