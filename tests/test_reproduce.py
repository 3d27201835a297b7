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
    # d is not implemented and says so rather than showing numbers.
    assert "not yet implemented" in text.split("## d. ")[1].split("## e. ")[0].lower()


def test_every_implemented_result_states_budget_seed_and_command(reproduction):
    for key, result in reproduction.results.items():
        assert result.implemented
        assert "Budget `tiny`" in result.body and "seed 0" in result.body
        assert "drl reproduce --budget tiny" in result.body, key
    assert set(reproduction.results) == {"a", "b", "c", "e"}


def test_numbers_are_finite_and_in_range(reproduction):
    numbers = [n for r in reproduction.results.values() for n in r.numbers]
    assert {n.kind for n in numbers} >= {"accuracy", "silhouette", "correlation", "fd"}
    for n in numbers:
        lo, hi = RANGES[n.kind]
        assert math.isfinite(n.value) and lo <= n.value <= hi, (n.name, n.value)


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
