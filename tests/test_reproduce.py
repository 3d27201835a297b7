"""`drl reproduce` at the test-only `tiny` budget: the report, its sections, ranges and PNGs.

Checks that the report is produced and well-formed, not what the numbers are (a 3-step model
measures nothing).
"""

from __future__ import annotations

import math
import re

import pytest

from drl_cli.main import main
from drl_engine.reproduce import run_reproduction
from drl_engine.reproduce.report import REPORT_NAME, SECTION_TITLES

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
