"""`drl reproduce` at the test-only `tiny` budget: the report, its sections, ranges and PNGs.

Checks that the report is produced and well-formed, not what the numbers are (a 3-step model
measures nothing).
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from drl_cli.main import main
from drl_engine.datasets import load_dataset
from drl_engine.reproduce import run_reproduction
from drl_engine.reproduce.budgets import get_budget
from drl_engine.reproduce.context import StudyContext, accuracy_noise
from drl_engine.reproduce.denoising_swap import informative_lines, own_code_at_chance, swap_winner
from drl_engine.reproduce.latent_2d import FOCI
from drl_engine.reproduce.report import REPORT_NAME, SECTION_TITLES
from drl_engine.reproduce.single_t import weighting_verdict
from drl_engine.reproduce.t_init import held_out_images
from drl_engine.spec import DatasetSpec

RANGES = {"accuracy": (0.0, 1.0), "silhouette": (-1.0, 1.0), "correlation": (-1.0, 1.0),
          "fd": (0.0, math.inf), "count": (1.0, math.inf)}


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("reproduce")
    return run_reproduction("tiny", out / "docs", data_dir=str(data_dir), device="cpu",
                            cache_dir=out / "cache", log=lambda msg: None)


def test_report_has_every_section_and_the_closing_note(reproduction):
    text = reproduction.report.read_text()
    assert reproduction.report.name == REPORT_NAME
    for key in SECTION_TITLES:
        assert re.search(rf"^## {key}\. ", text, re.M), f"section {key} missing"
    assert "## Closing note" in text
    assert "budget `tiny`" in text
    assert "not yet implemented" not in text.lower()


def test_every_implemented_result_states_budget_seed_and_command(reproduction):
    for key, result in reproduction.results.items():
        assert result.implemented
        assert "Budget `tiny`" in result.body and "seed 0" in result.body
        assert "drl reproduce --budget tiny" in result.body, key
    assert set(reproduction.results) == set(SECTION_TITLES)


def test_numbers_are_finite_and_in_range(reproduction):
    numbers = [n for r in reproduction.results.values() for n in r.numbers]
    assert {n.kind for n in numbers} >= {"accuracy", "silhouette", "correlation", "fd"}
    for n in numbers:
        lo, hi = RANGES[n.kind]
        assert math.isfinite(n.value) and lo <= n.value <= hi, (n.name, n.value)


def test_denoising_swap_reports_both_label_agreements_per_swap_t(reproduction):
    d = reproduction.results["d"]
    names = {n.name for n in d.numbers}
    assert names == {"d/t=0.5/code_source", "d/t=0.5/xt_source", "d/t=0.5/own_code"}
    assert any(f.endswith("d_swap.png") for f in d.figures)


def test_sample_quality_is_named_fd_lenet(reproduction):
    section_e = reproduction.report.read_text().split("## e. ")[1]
    assert "FD-LeNet" in section_e and "FID" not in section_e.replace("not an FID", "")


def test_every_referenced_png_exists(reproduction):
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", reproduction.report.read_text())
    assert len(links) >= 4
    for link in links:
        path = reproduction.report.parent / link
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link


def test_cli_runs_selected_sections_and_lists_the_rest(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("DRL_HOME", str(tmp_path / "home"))
    assert main(["reproduce", "--budget", "tiny", "--out", str(tmp_path / "out"),
                 "--data-dir", str(data_dir), "--device", "cpu", "--sections", "b"]) == 0
    text = (tmp_path / "out" / REPORT_NAME).read_text()
    assert "--sections b" in text
    assert text.count("Not run in this invocation") == 4


def test_cli_rejects_an_unknown_section(tmp_path, data_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--budget", "tiny", "--out", str(tmp_path), "--data-dir",
              str(data_dir), "--sections", "a,z"])
    assert exc.value.code == 2
    assert "--sections" in capsys.readouterr().err


def test_swap_pairs_are_of_different_classes_and_sources_are_not_reused():
    import torch
    from drl_engine.reproduce.denoising_swap import swap_pairs
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4] * 10)
    a, b = swap_pairs(y, 30, seed=0)
    assert len(a) == len(b) > 0 and len(a) <= 30
    assert bool((y[a] != y[b]).all())
    assert len(set(a.tolist()) | set(b.tolist())) == 2 * len(a)
    assert torch.equal(swap_pairs(y, 30, seed=0)[0], a)


def test_swap_section_alone_trains_its_own_model(tmp_path, data_dir):
    # d shares e's DRL; run without e it must train it itself (with gradients on).
    result = run_reproduction("tiny", tmp_path / "docs", data_dir=str(data_dir), device="cpu",
                              sections=["d"], cache_dir=tmp_path / "cache", log=lambda msg: None)
    assert set(result.results) == {"d"}
    assert all(0.0 <= n.value <= 1.0 for n in result.results["d"].numbers)


# --- issue 15 item 6: the controls and the prose that reads them ------------------------------

def section_text(reproduction, key: str) -> str:
    return reproduction.report.read_text().split(f"## {key}. ")[1].split("\n## ")[0]


def test_single_t_section_shows_uniform_t_and_the_untrained_control(reproduction):
    b = reproduction.results["b"]
    names = {n.name for n in b.numbers}
    assert {"b/uniform/silhouette", "b/random_init/silhouette"} <= names
    assert any(n.startswith("b/uniform/svc_") for n in names)
    text = section_text(reproduction, "b")
    assert "| uniform t (section e's DRL) |" in text and "| untrained control |" in text
    assert "one training run (one seed)" in text
    s = b.summary
    assert set(s["fixed_svc"]) == {"0.2", "0.8"} and 0 <= s["control_svc"] <= 1


def test_weighting_verdict_points_at_the_weighting_only_when_fixed_t_wins_beyond_noise():
    sigmas = {0.1: 0.03, 0.5: 0.707, 0.9: 21.3}
    # The committed full report's numbers: fixed t = 0.5 gives 0.577 against 0.254 for uniform t.
    wins = weighting_verdict({0.1: 0.2795, 0.5: 0.577, 0.9: 0.218}, 0.254, 0.25, 2000, sigmas, 0.31)
    assert "t = 0.5" in wins and "not the budget" in wins and "lambda = sigma^2" in wins
    assert "weighting-study" in wins and "fixed t = 0.5" in wins.split("untrained control")[1]
    tie = weighting_verdict({0.1: 0.26, 0.5: 0.262, 0.9: 0.25}, 0.254, 0.25, 2000, sigmas, 0.31)
    assert "do not separate the weighting from the budget" in tie and "not the budget" not in tie
    assert "none of these models" in tie


def test_latent_2d_section_has_its_untrained_2d_control_and_says_one_seed(reproduction):
    c = reproduction.results["c"]
    assert {"c/random_init/linear", "c/random_init/ink_r"} <= {n.name for n in c.numbers}
    text = section_text(reproduction, "c")
    assert "| untrained control (same 2-d encoder, no training) |" in text
    assert "Against the untrained 2-d control" in text and "one training seed" in text
    control = c.summary["random_init"]["class"]
    for focus, title in FOCI:
        # The sentence's verdict per focus follows its own numbers.
        value = c.summary[focus]["class"]
        beyond = value - control > accuracy_noise(control, 100)
        verdict = "above it beyond noise" if beyond else "not above it beyond noise"
        assert f"{title} {value:.4f} ({value - control:+.4f}: {verdict})" in text


def test_swap_rows_with_the_own_code_at_chance_are_marked_uninformative(reproduction):
    d = reproduction.results["d"]
    text = section_text(reproduction, "d")
    rows = [line for line in text.splitlines() if re.match(r"\| \d", line)]
    assert len(rows) == len(d.summary)
    pairs = int(re.search(r"(\d+) pairs of test images", text).group(1))
    for line, (t, row) in zip(rows, d.summary.items()):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == t and float(cells[4]) == pytest.approx(row["own_code"], abs=1e-4)
        assert row["informative"] == (not own_code_at_chance(row["own_code"], 10, pairs))
        assert cells[5] == ("yes" if row["informative"] else "**no**: own code at chance")
    if not all(row["informative"] for row in d.summary.values()):
        assert "**Uninformative at t = " in text
        assert "uninformative at t = " in reproduction.report.read_text().split("## Closing")[1]


def test_own_code_at_chance_is_two_binomial_standard_errors_around_one_over_classes():
    # The committed full report (500 pairs): t = 0.9's 0.118 is at chance, t = 0.3's 0.946 is not.
    assert own_code_at_chance(0.118, 10, 500) and not own_code_at_chance(0.946, 10, 500)
    noise = accuracy_noise(0.1, 500)
    assert own_code_at_chance(0.1 + 0.99 * noise, 10, 500)
    assert not own_code_at_chance(0.1 + 1.01 * noise, 10, 500)
    summary = {"0.3": {"code_source": 0.004, "xt_source": 0.948, "own_code": 0.946, "informative": True,
                       "winner": swap_winner(0.004, 0.948, 500)},
               "0.9": {"code_source": 0.116, "xt_source": 0.092, "own_code": 0.118, "informative": False,
                       "winner": swap_winner(0.116, 0.092, 500)}}
    text = "\n".join(informative_lines(summary, 10, 500))
    assert "Uninformative at t = 0.9" in text and "largest of them, t = 0.3" in text
    assert "the x_t's image wins by more than two standard errors" in text


def test_a_swap_label_wins_only_beyond_two_standard_errors_of_the_difference():
    # The committed full report's t = 0.7 row: 0.126 follow the code, 0.106 the x_t (500 pairs).
    assert swap_winner(0.126, 0.106, 500).startswith("neither image wins")
    assert swap_winner(0.30, 0.10, 500).startswith("the code's image wins")
    assert swap_winner(0.004, 0.948, 500).startswith("the x_t's image wins")


def test_t_init_section_states_the_real_data_floor_and_one_seed(reproduction):
    e = reproduction.results["e"]
    floors = [n.value for n in e.numbers if n.name.startswith("e/held_out_floor/")]
    assert len(floors) == 3 and all(math.isfinite(v) and v > 0 for v in floors)
    assert e.summary["real_floor"] == pytest.approx(sum(floors) / 3)
    text = section_text(reproduction, "e")
    assert "Real-data floor: FD-LeNet of 16 real held-out images" in text
    assert f"{e.summary['real_floor']:.3f}" in text
    assert "one training seed and one sampling seed" in text
    lowest = min(e.summary["fd"].values())
    assert f"{lowest / e.summary['real_floor']:.1f} times the real-data floor" in text


def test_held_out_images_come_after_the_training_subset(data_dir):
    budget = get_budget("tiny")
    ctx = StudyContext(budget, None, None, None, "", data_dir=str(data_dir))
    sets = held_out_images(ctx, 16, 3)
    assert [len(s) for s in sets] == [16, 16, 16]
    full = load_dataset(DatasetSpec(name="mnist", data_dir=str(data_dir),
                                    train_limit=budget.train_limit + 48, test_limit=1))
    assert torch.equal(torch.cat(sets), full.x_train[budget.train_limit:])
