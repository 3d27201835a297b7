"""`drl weighting-study` at the test-only tiny budget: the grid, the specs, the report, resume
and sharding. Digits and U-Nets a few hundred parameters big; numbers mean nothing here."""

from __future__ import annotations

import json

import pytest

from drl_cli.main import main
from drl_engine.weighting.budgets import BUDGETS, VARIANTS, get_budget
from drl_engine.weighting.cells import CELL_FILE, cell_spec
from drl_engine.weighting.report import Estimate, paired_gap
from drl_engine.weighting.study import run_weighting_study


@pytest.fixture(autouse=True)
def lenet_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRL_HOME", str(tmp_path / "drl_home"))


def test_cells_compare_variants_at_equal_steps_with_the_right_settings():
    budget = get_budget("full")
    cells = budget.cells()
    # 3 seeds; digits: 4 variants; MNIST: 4 static + edm at twice the steps + paper and edm
    # time-conditioned; Fashion-MNIST: paper, edm, AE.
    assert len(cells) == 3 * (4 + 7 + 3)
    assert {c.variant for c in cells if c.encoder == "time_conditioned"} == {"paper", "edm"}
    assert {c.seed for c in cells} == {0, 1, 2}
    specs = {c: cell_spec(budget, c) for c in cells}
    assert {s.train.iterations for c, s in specs.items() if c.variant != "edm_2x"} == {
        budget.iterations}
    assert {s.train.iterations for c, s in specs.items() if c.variant == "edm_2x"} == {
        2 * budget.iterations}
    for cell, spec in specs.items():
        assert spec.train.seed == spec.evaluate.seed == spec.sample.seed == cell.seed
        assert spec.model.encoder == cell.encoder
        expected_kind = "ae" if cell.variant == "ae" else "drl"
        assert spec.model.kind == expected_kind
        if cell.variant in ("edm", "edm_2x"):
            assert spec.objective.parameterization == "edm"
        if cell.variant == "window":
            assert spec.objective.t_sampling == "window"
            assert spec.train.decoder_finetune_steps > 0
        else:
            assert spec.train.decoder_finetune_steps == 0
    assert list(VARIANTS) == ["paper", "edm", "window", "ae", "edm_2x"]
    with pytest.raises(ValueError, match="--budget"):
        get_budget("huge")
    assert set(BUDGETS) == {"tiny", "small", "full", "paper"}


def test_estimates_and_paired_gap():
    est = Estimate.of([0.5, 0.7, None, float("nan")])
    assert est.n == 2 and est.mean == pytest.approx(0.6) and est.se == pytest.approx(0.1)
    assert str(Estimate.of([])) == "n/a" and str(Estimate.of([0.25])) == "0.250"

    class R:   # the part of CellResult paired_gap reads
        def __init__(self, trained, control):
            self.probes = {"best": {"linear": {"value": trained}},
                           "control_best": {"linear": {"value": control}}}
    gap = paired_gap([R(0.9, 0.3), R(0.8, 0.4)], "linear")
    assert gap.mean == pytest.approx(0.5) and gap.se == pytest.approx(0.1)


def test_tiny_study_writes_the_report_resumes_and_shards(tmp_path):
    out, runs = tmp_path / "docs", tmp_path / "runs"
    args = ["weighting-study", "--budget", "tiny", "--out", str(out), "--runs-dir", str(runs),
            "--device", "cpu"]
    # Two shards: the first leaves the report to whoever finishes the grid.
    assert main(args + ["--shard", "0/2"]) == 0
    assert not (out / "WEIGHTING.md").exists()
    # ... unless asked for a report of what has run: it lists the cells that have not.
    assert main(args + ["--report-only"]) == 0
    partial = (out / "WEIGHTING.md").read_text()
    first_missing = get_budget("tiny").cells()[1].name
    assert "**Incomplete: " in partial and f"`{first_missing}`" in partial
    assert main(args + ["--shard", "1/2"]) == 0
    report = (out / "WEIGHTING.md").read_text()
    budget = get_budget("tiny")
    for cell in budget.cells():
        data = json.loads((runs / cell.name / CELL_FILE).read_text())
        probes = data["probes"]
        # The untrained control is there, and the best t was chosen on validation.
        assert probes["control_rows"] and probes["control_best"]
        assert all("validation" in b for b in probes["best"].values())
        # Accuracy against steps from every checkpoint of the main phase and the end.
        assert [p["step"] for p in data["curve"]] == sorted(p["step"] for p in data["curve"])
        assert len(data["curve"]) >= budget.checkpoints
        if cell.variant != "ae":
            assert data["code_usage"]["rows"]
    for heading in ("## Targets", "## digits", "Untrained control", "Gap over the control",
                    "t-profile", "## Accuracy against training steps",
                    "## Where along t the code is used"):
        assert heading in report
    assert "beats control by > 3 SE?" in report
    for png in ("accuracy_vs_steps.png", "code_usage.png", "t_profile_digits.png"):
        assert (out / "weighting" / png).stat().st_size > 0
    # A rerun reads every cell back instead of training.
    before = {c.name: (runs / c.name / CELL_FILE).stat().st_mtime_ns for c in budget.cells()}
    result = run_weighting_study("tiny", out, runs_dir=runs, device="cpu", log=lambda m: None)
    assert result.report is not None
    assert before == {c.name: (runs / c.name / CELL_FILE).stat().st_mtime_ns
                      for c in budget.cells()}
    # The report's record (committed beside it) holds every cell: on another machine, with
    # no runs folder, the study reads it back and trains nothing.
    records = sorted((out / "weighting" / "cells").rglob("*.json"))
    assert len(records) == len(budget.cells())
    again = run_weighting_study("tiny", out, runs_dir=tmp_path / "fresh", device="cpu",
                                log=lambda m: None)
    assert again.report is not None and not (tmp_path / "fresh").exists()


def test_bad_shard_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["weighting-study", "--budget", "tiny", "--shard", "2/2"])
    assert exit_info.value.code != 0
    assert "--shard" in capsys.readouterr().err
