"""Image grids and probe-curve PNGs."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from drl_engine.pipeline import grid_width
from drl_engine.plots import (captioned_grid_figure, image_grid, plot_probe_curves,
                              probe_curves_figure, save_captioned_grid, save_image_grid)
from drl_engine.probes import ProbeTable


def batch(b: int, c: int, h: int = 4, w: int = 5) -> np.ndarray:
    return np.random.default_rng(0).uniform(size=(b, c, h, w)).astype(np.float32)


def test_grid_shape_gray_and_colour():
    # 6 images -> 3 per row (ceil sqrt 6), 2 rows; 2 px of padding between and around.
    assert image_grid(batch(6, 1)).shape == (2 * (4 + 2) + 2, 3 * (5 + 2) + 2)
    assert image_grid(batch(6, 3)).shape == (14, 23, 3)
    assert image_grid(batch(6, 3), nrow=6, padding=0).shape == (4, 30, 3)


def test_grid_places_pixels_and_accepts_torch():
    images = batch(5, 3)
    grid = image_grid(torch.from_numpy(images), nrow=2, padding=1)
    assert grid.dtype == np.uint8 and grid.shape == (3 * 5 + 1, 2 * 6 + 1, 3)
    # Image 3 is row 1, column 1.
    cell = grid[1 + 5:1 + 5 + 4, 1 + 6:1 + 6 + 5]
    assert np.array_equal(cell, np.round(images[3].transpose(1, 2, 0) * 255).astype(np.uint8))
    assert (grid[0] == 0).all()   # padding row
    assert (grid[-5:, -6:] == 0).all()   # the empty sixth cell


def test_grid_clips_out_of_range():
    images = np.full((1, 1, 2, 2), 2.0)
    images[0, 0, 0, 0] = -1.0
    assert image_grid(images, padding=0).tolist() == [[0, 255], [255, 255]]


@pytest.mark.parametrize("shape", [(4, 2, 3, 3), (3, 3, 3), (0, 1, 3, 3)])
def test_grid_refuses_bad_shapes(shape):
    with pytest.raises(ValueError, match=r"images: expected .*\(B, C, H, W\)"):
        image_grid(np.zeros(shape))


def test_save_image_grid_png(tmp_path):
    path = tmp_path / "samples" / "grid.png"
    save_image_grid(batch(9, 1, 28, 28), path, nrow=3)
    with Image.open(path) as img:
        assert img.format == "PNG"
        # 92 px wide, enlarged by the whole factor 512 // 92 = 5 with nearest-neighbour.
        assert img.size == (5 * (3 * 30 + 2), 5 * (3 * 30 + 2))
        small = np.asarray(img)[::5, ::5]
        assert np.array_equal(np.asarray(img), np.repeat(np.repeat(small, 5, 0), 5, 1))


def test_plot_probe_curves_png(tmp_path):
    table = ProbeTable(columns=["svc_100", "svc_1000", "linear", "mlp", "silhouette"], rows=[
        {"t": round(0.1 * i, 1), "svc_100": 0.5 + 0.04 * i, "svc_1000": 0.6 + 0.03 * i,
         "linear": 0.7, "mlp": 0.8 - 0.01 * i, "silhouette": 0.1 * np.sin(i)}
        for i in range(11)])
    path = tmp_path / "probes.png"
    plot_probe_curves(table, path, title="DRL MNIST")
    assert path.stat().st_size > 1000
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > img.size[1]


def test_probe_curves_draw_the_control_dashed_in_the_same_colour():
    columns = ["svc_100", "linear", "silhouette"]
    rows = [{"t": t, **{c: 0.8 for c in columns}, **{f"val_{c}": 0.8 for c in columns}}
            for t in (0.0, 0.5, 1.0)]
    control = [{**row, **{c: 0.2 for c in columns}} for row in rows]
    fig = probe_curves_figure(ProbeTable(columns, rows, control), title="with control")
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    for column in columns:
        solid = next(line for line in lines if line.get_label().startswith(column + " "))
        dashed = next(line for line in lines if line.get_gid() == f"random_init:{column}")
        assert dashed.get_linestyle() == "--" and solid.get_linestyle() == "-"
        assert dashed.get_color() == solid.get_color()
        assert list(dashed.get_ydata()) == [0.2] * 3
    assert any("random_init" in text.get_text() for ax in fig.axes
               for text in ax.get_legend().get_texts())
    # Without a control there are no dashed curves.
    plain = probe_curves_figure(ProbeTable(columns, rows))
    assert not [line for ax in plain.axes for line in ax.get_lines() if line.get_linestyle() == "--"]


def test_plots_never_load_pyplot():
    # Only the Agg canvas: pyplot (and with it any GUI backend) is never imported. A fresh
    # interpreter, since other tests in this process may import pyplot themselves.
    code = ("import sys; from drl_engine.plots import plot_probe_curves; "
            "from drl_engine.probes import ProbeTable; import tempfile, os; "
            "d = tempfile.mkdtemp(); "
            "plot_probe_curves(ProbeTable(['mlp'], [{'t': 0.0, 'mlp': 0.5}]), "
            "os.path.join(d, 'p.png')); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_plot_single_panel_and_empty_table(tmp_path):
    only_acc = ProbeTable(columns=["linear"], rows=[{"t": 0.5, "linear": 0.9}])
    plot_probe_curves(only_acc, tmp_path / "one.png")
    assert (tmp_path / "one.png").stat().st_size > 0
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_probe_curves(ProbeTable(columns=["linear"], rows=[]), tmp_path / "none.png")


@pytest.mark.parametrize("n, target, width", [
    (8, 4, 4), (6, 4, 6), (7, 3, 7), (2, 2, 2),
    (1, 2, 1),   # one encoded sample: target ceil(sqrt(2)) = 2 > 1 (was a StopIteration)
    (3, 10, 3), (0, 3, 1),
])
def test_grid_width_divides_n_and_is_one_row_when_the_target_exceeds_n(n, target, width):
    assert grid_width(n, target) == width


def test_probe_curves_draw_a_chance_line_and_keep_the_legend_off_the_curves():
    columns = ["svc_100", "linear", "silhouette"]
    rows = [{"t": t, **{c: 0.9 for c in columns}, **{f"val_{c}": 0.9 for c in columns}}
            for t in (0.0, 0.5, 1.0)]
    fig = probe_curves_figure(ProbeTable(columns, rows), chance=0.1)
    accuracy, silhouette = fig.axes
    (chance,) = [line for line in accuracy.get_lines() if line.get_gid() == "chance"]
    assert list(chance.get_ydata()) == [0.1, 0.1] and chance.get_linestyle() == ":"
    assert "chance (0.1)" in [t.get_text() for t in accuracy.get_legend().get_texts()]
    assert not [line for line in silhouette.get_lines() if line.get_gid() == "chance"]
    # Each legend lies outside its panel, right of it: it cannot hide a curve.
    fig.canvas.draw()
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent()
        assert legend.x0 >= ax.get_window_extent().x1


def test_captioned_grid_puts_each_caption_under_its_image(tmp_path):
    images = batch(6, 1, 16, 16)
    captions = [str(i) for i in range(6)]
    fig = captioned_grid_figure(images, 3, captions, ["white"] * 6, title="a title")
    (ax,) = fig.axes
    texts = {t.get_text(): t.get_position() for t in ax.texts}
    assert sorted(texts) == captions
    # Image i of 16 px sits at column i % 3, row i // 3 of (16 + 2 + 8)-px rows: its caption
    # is centred under it, in the 8-px band below the image.
    for i in range(6):
        x, y = texts[str(i)]
        assert x == pytest.approx(2 + (i % 3) * 18 + 7.5)
        assert y == pytest.approx(2 + (i // 3) * 26 + 16 + 4)
    assert [t.get_text() for t in fig.texts] == ["a title"]
    save_captioned_grid(images, tmp_path / "g.png", 3, captions, ["white"] * 6)
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="one caption and one colour per image"):
        captioned_grid_figure(images, 3, captions[:5], ["white"] * 6)


def test_image_grid_leaves_room_for_captions():
    assert image_grid(batch(6, 1), nrow=3, caption_height=5).shape == (2 * (4 + 5 + 2) + 2, 3 * (5 + 2) + 2)


def test_samples_png_pairs_each_row_of_sources_with_their_reconstructions(monkeypatch, tmp_path):
    from drl_engine import pipeline
    from drl_engine.generate import Generation

    sources = torch.arange(4, dtype=torch.float32).reshape(4, 1, 1, 1).expand(4, 1, 2, 2) / 10
    reconstructions = sources + 0.5
    assert pipeline.paired_rows(sources, reconstructions, 2)[:, 0, 0, 0].tolist() == pytest.approx(
        [0.0, 0.1, 0.5, 0.6, 0.2, 0.3, 0.7, 0.8])
    drawn = {}
    monkeypatch.setattr(pipeline, "save_captioned_grid",
                        lambda images, path, nrow, captions, colours, title: drawn.update(
                            nrow=nrow, captions=captions, colours=colours, title=title))
    labels = pipeline.ReconstructionLabels(torch.tensor([3, 1, 4, 1]), torch.tensor([3, 7, 4, 1]))
    generation = Generation(images=reconstructions, references=sources, codes=None, result=None)
    pipeline.save_generation(generation, tmp_path / "samples.png", labels)
    # 4 pairs in rows of 4 (the smallest divisor of 4 >= ceil(sqrt(8))): sources' classes, then
    # the classifier's labels of the reconstructions below them, coloured by agreement.
    assert drawn["nrow"] == 4 and drawn["captions"] == ["3", "1", "4", "1", "3", "7", "4", "1"]
    assert drawn["colours"] == [pipeline.SOURCE_COLOUR] * 4 + [
        pipeline.AGREES_COLOUR, pipeline.DIFFERS_COLOUR, pipeline.AGREES_COLOUR, pipeline.AGREES_COLOUR]
    assert "3 of 4 agree" in drawn["title"] and labels.agreement == 0.75
