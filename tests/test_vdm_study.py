"""FD-LeNet of prior samples in `drl run`'s metrics.json, and the VDM-VAE capacity study.

Both use the bundled digits (16x16, no files) and U-Nets a few thousand parameters big; the
LeNet cache goes to a temporary DRL_HOME.
"""

from __future__ import annotations

import json
import math

import pytest

from drl_cli.main import main
from drl_engine.fd_lenet import FD_LENET
from drl_engine.vdm.losses import TERMS
from drl_engine.vdm_study import KINDS, STUDY_BUDGETS, get_budget, run_vdm_study, study_spec

TINY_MODEL = {"base_channels": 8, "channel_mult": [1], "num_res_blocks": 1, "attn_resolutions": [],
              "latent_dim": 2, "dropout": 0.0}


@pytest.fixture(autouse=True)
def lenet_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRL_HOME", str(tmp_path / "drl_home"))


def write_spec(tmp_path, kind: str, count: int) -> str:
    spec = tmp_path / f"{kind}.json"
    spec.write_text(json.dumps({
        "dataset": {"name": "digits", "train_limit": 200, "test_limit": 40},
        "model": {"kind": kind, **TINY_MODEL},
        "vdm": {"schedule_features": 16},
        "train": {"iterations": 5, "batch_size": 16, "lr": 5e-3, "warmup": 0,
                  "checkpoint_every": 5, "log_every": 5, "device": "cpu"},
        "evaluate": {"t_grid": [0.0], "probes": ["linear"], "label_budgets": [20]},
        "sample": {"steps": 3, "count": count},
    }))
    return str(spec)


@pytest.mark.parametrize("kind", KINDS)
def test_drl_run_reports_fd_lenet_of_the_generated_samples(tmp_path, kind):
    out = tmp_path / "out"
    assert main(["run", write_spec(tmp_path, kind, count=6), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    fd = metrics["fd_lenet"]
    assert fd["name"] == FD_LENET and fd["samples"] == 6 and fd["steps"] == 3
    assert math.isfinite(fd["value"]) and fd["value"] >= 0.0
    # Six samples are far too few for a stable estimate, and metrics.json says so.
    assert "only 6 samples" in fd["note"] and fd["smoke"] is True
    # Beside the value: its bootstrap interval and the floor of 6 real training images.
    assert 0.0 <= fd["ci_low"] <= fd["ci_high"] and fd["ci_level"] == 0.95
    floor = fd["floor"]
    assert floor["samples"] == 6 and floor["split"] == "train" and floor["value"] >= 0.0
    assert 0.0 <= floor["ci_low"] <= floor["ci_high"]
    # The number is of samples.png's images: the same count and steps as the sample summary.
    assert (metrics["sample"]["count"], metrics["sample"]["steps"]) == (6, 3)
    if kind == "vdm_vae":
        assert metrics["sample"]["code_source"] == "prior"
    # The LeNet was trained once and cached under DRL_HOME.
    assert list((tmp_path / "drl_home" / "cache" / "fd_lenet").glob("digits_*.pt"))


def test_study_specs_train_both_kinds_at_equal_steps_and_budgets_are_named():
    small = get_budget("small")
    assert len(small.widths) >= 2 and len(STUDY_BUDGETS["full"].widths) >= 2
    for width in small.widths:
        vae, base = (study_spec(small, kind, width) for kind in KINDS)
        assert (vae.model.kind, base.model.kind) == ("vdm_vae", "vdm")
        assert vae.train == base.train and vae.model.base_channels == base.model.base_channels == width
        assert vae.sample == base.sample
        assert vae.dataset.name == "mnist" and vae.vdm.kl_anneal_steps == 0 and vae.vdm.free_bits == 0
    with pytest.raises(ValueError, match="--budget: expected one of"):
        get_budget("huge")


def test_tiny_study_writes_the_report_with_consistent_numbers(tmp_path):
    result = run_vdm_study("tiny", tmp_path / "docs", runs_dir=tmp_path / "runs", device="cpu",
                           log=lambda _: None)
    budget = STUDY_BUDGETS["tiny"]
    assert [(r.width, r.kind, r.cell.free_bits) for r in result.rows] == [
        *((w, k, 0.0) for w in budget.widths for k in KINDS), (budget.widths[0], "vdm_vae", 0.5)]
    for row in result.rows:
        bits = row.bits
        assert all(math.isfinite(bits[name]) for name in (*TERMS, "total"))
        assert bits["total"] > 0
        assert bits["total"] == pytest.approx(sum(bits[name] for name in TERMS), rel=1e-9)
        assert row.steps == budget.iterations
        assert math.isfinite(row.fd["value"]) and row.fd["value"] >= 0
        if row.kind == "vdm":
            assert bits["kl"] == 0 and row.encoder_parameters == 0 and row.probe_best is None
        else:
            assert bits["kl"] > 0 and row.encoder_parameters > 0 and "linear" in row.probe_best
        assert (tmp_path / "docs" / row.samples_png).stat().st_size > 0

    report = result.report.read_text()
    assert result.report == tmp_path / "docs" / "VDM_VAE.md"
    assert "tiny budget" in report and "drl vdm-study --budget tiny" in report
    table = table_rows(report, "## Results")
    assert len(table) == len(result.rows)
    for line, row in zip(table, result.rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:2] == [str(row.width), row.cell.label]
        assert float(cells[5]) == pytest.approx(row.bits["total"], abs=1e-4)
        value, interval = cells[11].split(" ", 1)   # "value [ci_low, ci_high]"
        assert float(value) == pytest.approx(row.fd["value"], abs=1e-3)
        assert interval == f"[{row.fd['ci_low']:.3f}, {row.fd['ci_high']:.3f}]"
    # The free-bits cell trained with free bits and is reported as such, against its width's ELBO VAE.
    assert "vdm_vae (free bits 0.5)" in report and "not* on the ELBO" in report
    # The runs' checkpoints stay out of the report folder.
    assert not list((tmp_path / "docs").rglob("*.pt"))

    # Does the decoder use z: the within-model test, one line per vdm_vae, and the verdicts
    # of the reading notes come from it.
    vaes = [r for r in result.rows if r.kind == "vdm_vae"]
    assert all(r.code_use is None for r in result.rows if r.kind == "vdm")
    code_table = table_rows(report, "## Does the decoder use z?")
    assert len(code_table) == len(vaes)
    for line, row in zip(code_table, vaes):
        test = row.code_use
        # Its posterior-code column is the reported diffusion term: the same draws.
        assert test.posterior == pytest.approx(row.bits["diffusion"], rel=1e-9, abs=1e-12)
        assert test.images == budget.test_limit
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[2]) == pytest.approx(test.posterior, abs=1e-4)
        assert cells[-1] == ("yes" if test.uses_code else "**no**")
    notes = report.split("## How to read it")[1]
    for row in vaes:
        if not row.cell.free_bits:
            note = next(line for line in notes.splitlines()
                        if f"use z at base_channels {row.width}?" in line)
            assert ("the decoder uses it" in note) == row.code_use.uses_code
            assert ("does not measurably use it" in note) == (not row.code_use.uses_code)
    # The schedule's endpoints are learned, and the report gives every run's trained values.
    for row in result.rows:
        assert row.endpoints[0] < row.endpoints[1]
        assert f"{row.cell.name} ({row.endpoints[0]:.2f}, {row.endpoints[1]:.2f})" in report
    assert "endpoints gamma(0), gamma(1) are learned" in report


def table_rows(report: str, section: str) -> list[str]:
    """The body rows of the first Markdown table under the heading `section`."""
    body = report.split(section, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    return rows[2:]   # after the header and the |---| line


def test_cli_vdm_study_records_its_command_and_keeps_runs_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out, runs = tmp_path / "docs", tmp_path / "runs"
    assert main(["vdm-study", "--budget", "tiny", "--out", str(out), "--runs-dir", str(runs),
                 "--device", "cpu"]) == 0
    report = (out / "VDM_VAE.md").read_text()
    assert f"OMP_NUM_THREADS=1 drl vdm-study --budget tiny --out {out} --device cpu" in report
    for kind in KINDS:
        metrics = json.loads((runs / f"{kind}_c4" / "metrics.json").read_text())
        assert metrics["fd_lenet"]["name"] == FD_LENET
    with pytest.raises(SystemExit):
        main(["vdm-study", "--budget", "huge"])
