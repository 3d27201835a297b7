"""`drl run` end to end: real training on real data, every output file, and bad input."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from drl_cli.main import main
from drl_engine import provenance
from drl_engine.spec import DatasetSpec

# Small enough to train in seconds on 2 cores, large enough to exercise every stage.
TINY = {
    "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
              "attn_resolutions": [], "latent_dim": 4},
    "train": {"iterations": 30, "batch_size": 16, "warmup": 10, "checkpoint_every": 20,
              "log_every": 10, "device": "cpu"},
    "evaluate": {"t_grid": [0.0, 0.5, 1.0], "label_budgets": [20, 50], "probe_train_limit": 200},
    "sample": {"sampler": "pc", "steps": 20, "count": 4},
}


def git_head() -> str:
    return subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse",
                           "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def write_spec(path: Path, **sections) -> Path:
    spec = json.loads(json.dumps(TINY))
    for name, values in sections.items():
        spec.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(spec))
    return path


def read_probes(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_run_digits_time_conditioned_writes_every_output(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml",
                      dataset={"name": "digits", "train_limit": 300, "test_limit": 100},
                      model={**TINY["model"], "encoder": "time_conditioned"})
    out = tmp_path / "out"
    head_before = git_head()
    provenance.code_commit.cache_clear()   # as if this process started now, as `drl run` does
    assert main(["run", str(spec), "--out", str(out)]) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 30
    # What made it: this checkout's commit (or the next, should someone commit meanwhile),
    # this CPU, the digits file's fingerprint (tests/test_provenance.py checks every field).
    made_by = metrics["provenance"]
    assert made_by["git_commit"] in {head_before, git_head()}
    assert (made_by["device"], made_by["cuda"], made_by["cudnn"]) == ("cpu", None, None)
    assert made_by["dataset"] == provenance.dataset_fingerprint(DatasetSpec(name="digits"))
    assert np.isfinite(metrics["train"]["final_loss"])
    assert metrics["encode"]["t_independent"] is False
    assert metrics["sample"]["finite"] is True
    # pc, 20 steps, one corrector step: 40 network evaluations per image, and their seconds
    assert metrics["sample"]["nfe"] == 40 and metrics["sample"]["seconds"] > 0
    # Every kind that samples reports the FD-LeNet of samples.png, as the service's jobs do.
    assert metrics["fd_lenet"]["samples"] == 4 and metrics["fd_lenet"]["value"] >= 0

    columns = ["svc_20", "svc_50", "svc_20_std", "svc_50_std", "linear", "mlp", "silhouette"]
    rows = read_probes(out / "probes.csv")
    assert list(rows[0]) == ["encoder", "t", *columns, *(f"val_{c}" for c in columns)]
    # The trained encoder's rows, then its untrained control's, at the same t.
    assert [(r["encoder"], r["t"]) for r in rows] == [
        (encoder, t) for encoder in ("trained", "random_init") for t in ("0.000", "0.500", "1.000")]
    for row in rows:
        for col in columns[:-1]:
            assert 0.0 <= float(row[col]) <= 1.0 and 0.0 <= float(row[f"val_{col}"]) <= 1.0
        assert -1.0 <= float(row["silhouette"]) <= 1.0
    # metrics.json: both tables, each with its best t chosen on the validation split.
    probes = metrics["probes"]
    assert probes["columns"] == columns
    assert [r["t"] for r in probes["control_rows"]] == [r["t"] for r in probes["rows"]] == [0.0, 0.5, 1.0]
    for best, table_rows in ((probes["best"], probes["rows"]),
                             (probes["control_best"], probes["control_rows"])):
        assert set(best) == set(columns)
        for col, chosen in best.items():
            validation = [r[f"val_{col}"] for r in table_rows]
            assert chosen["validation"] == max(validation)
            assert chosen["t"] == table_rows[validation.index(max(validation))]["t"]
    # The control was encoded by an untrained model of the same architecture and seed.
    control = np.load(out / "embeddings" / "random_init" / "test_t=0.500.npy")
    assert control.shape == (100, 4) and not np.allclose(
        control, np.load(out / "embeddings" / "test_t=0.500.npy"))

    for split, n in (("train", 300), ("test", 100)):
        labels = np.load(out / "embeddings" / f"{split}_labels.npy")
        assert labels.shape == (n,)
        for t in ("0.000", "0.500", "1.000"):
            emb = np.load(out / "embeddings" / f"{split}_t={t}.npy")
            assert emb.shape == (n, 4) and emb.dtype == np.float32
    # A time-conditioned encoder gives different codes at different t.
    e0 = np.load(out / "embeddings" / "test_t=0.000.npy")
    e1 = np.load(out / "embeddings" / "test_t=1.000.npy")
    assert not np.allclose(e0, e1)

    # The code-usage diagnostic at each checkpoint (20, 30) and at the end (30: the same).
    with (out / "code_usage.csv").open() as f:
        usage = list(csv.DictReader(f))
    assert list(usage[0]) == ["step", "t", "error_true", "error_shuffled", "error_class_shuffled",
                              "code_gain", "class_gain"]
    assert [(r["step"], r["t"]) for r in usage] == [
        (step, t) for step in ("20", "30") for t in ("0.000", "0.500", "1.000")]
    for row in usage:
        assert float(row["code_gain"]) == float(row["error_shuffled"]) - float(row["error_true"])
    final = metrics["code_usage"]
    assert final["step"] == 30 and final["images"] == 100
    assert [r["t"] for r in final["rows"]] == [0.0, 0.5, 1.0]
    assert all(r["error_true"] >= 0 and r["class_gain"] is not None for r in final["rows"])

    for png in ("samples.png", "probes.png", "code_usage.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "checkpoints").glob("ckpt_*.pt"))[-1] == "ckpt_00000030.pt"


@pytest.mark.slow
def test_run_on_user_npz_static_encoder(tmp_path):
    rng = np.random.default_rng(0)
    # Two classes a network can tell apart: bright squares top-left vs bottom-right.
    x = rng.integers(0, 40, size=(240, 12, 12), dtype=np.uint8)
    y = np.arange(240) % 2
    x[y == 0, :6, :6] = 220
    x[y == 1, 6:, 6:] = 220
    npz = tmp_path / "mine.npz"
    np.savez(npz, x_train=x, y_train=y)
    spec = write_spec(tmp_path / "spec.yaml", dataset={"name": "npz", "path": str(npz)},
                      evaluate={"t_grid": [0.2, 0.8], "label_budgets": [10]})
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    rows = read_probes(out / "probes.csv")
    # A static encoder's codes do not depend on t: identical rows, identical files.
    assert rows[0]["svc_10"] == rows[1]["svc_10"]
    assert [r["encoder"] for r in rows] == ["trained", "trained", "random_init", "random_init"]
    assert rows[2]["svc_10_std"] == rows[3]["svc_10_std"]
    a = np.load(out / "embeddings" / "test_t=0.200.npy")
    b = np.load(out / "embeddings" / "test_t=0.800.npy")
    assert np.array_equal(a, b) and a.shape == (24, 4)  # seeded 10% test split


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # One torch thread: the oversubscription warning (its own line) must not fire on a busy
    # test machine; these tests are about the error line.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DRL_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "drl_cli.main", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def assert_one_error_line(proc: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit 2 and one line on stderr, `drl: error: ...`, containing each of `expected`."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drl: error: "), proc.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("content, expected", [
    ("model: {kind: transformer}\n", "model.kind"),
    ("train: {lr: -1}\n", "train.lr"),
    ("objective: {t_sampling: fixed}\n", "objective.t_fixed"),
    ("modle: {}\n", "modle: unknown field"),
    ("model: [unclosed\n", "line 2, column 1: not valid YAML"),
    ("name: x\n  model: 2\n", "line 2, column 8: not valid YAML (mapping values"),
    ("model:\n\tkind: drl\n", "line 2, column 1: not valid YAML"),
])
def test_bad_spec_is_one_line_and_exit_2(tmp_path, content, expected):
    spec = tmp_path / "bad.yaml"
    spec.write_text(content)
    proc = run_cli("run", str(spec), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_spec_file_and_missing_dataset(tmp_path):
    proc = run_cli("run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "nope.yaml" in proc.stderr and "not found" in proc.stderr

    spec = write_spec(tmp_path / "spec.yaml", dataset={"name": "mnist", "data_dir": str(tmp_path / "empty")})
    proc = run_cli("run", str(spec), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2, proc.stderr
    assert "train-images-idx3-ubyte" in proc.stderr and "Traceback" not in proc.stderr


def test_set_overrides_are_validated_like_the_spec(tmp_path):
    from drl_cli.overrides import apply_overrides
    from drl_cli.errors import CLIError

    spec = apply_overrides({"model": {"latent_dim": 8}},
                           ["model.channel_mult=[1, 2]", "train.iterations=5", "name=x"])
    assert spec == {"model": {"latent_dim": 8, "channel_mult": [1, 2]},
                    "train": {"iterations": 5}, "name": "x"}
    with pytest.raises(CLIError, match="section.field=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(CLIError, match="name is not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])

    spec_file = write_spec(tmp_path / "spec.yaml", dataset={"name": "digits"})
    proc = run_cli("run", str(spec_file), "--out", str(tmp_path / "o"), "--set", "model.latent_dim=0")
    assert proc.returncode == 2 and "model.latent_dim" in proc.stderr


def test_the_training_bar_closes_when_training_ends():
    """Not at the end of the whole run: its time and s/step must be the training's."""
    import io

    from drl_cli.run_cmd import TrainingBar
    from drl_engine.trainer import TrainProgress

    stream = io.StringIO()
    bar = TrainingBar(30, file=stream)
    bar(TrainProgress(step=10, total=30, loss=2.5, images_per_s=100.0, lr=1e-3))
    assert "10/30" in stream.getvalue() and not stream.getvalue().endswith("\n")
    bar(TrainProgress(step=30, total=30, loss=1.5, images_per_s=100.0, lr=1e-3))
    # closed: the final line is written out, while encode, probe and sample are still to come
    assert "30/30" in stream.getvalue() and stream.getvalue().endswith("\n")
    bar(TrainProgress(step=30, total=30, loss=1.5, images_per_s=100.0, lr=1e-3))
    bar.close()  # the run's own close, later, changes nothing
    assert stream.getvalue().count("\n") == 1


def test_a_dataset_error_leaves_no_output_folder(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", dataset={"name": "mnist", "data_dir": str(tmp_path / "none")})
    proc = run_cli("run", str(spec), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and not (tmp_path / "out").exists()


def test_json_syntax_error_names_line_and_column(tmp_path):
    spec = tmp_path / "bad.json"
    spec.write_text('{"model": {"kind": "drl",}}')
    assert_one_error_line(run_cli("run", str(spec), "--out", str(tmp_path / "o")),
                          "bad.json: line 1, column 26: not valid JSON")


def test_an_unusable_out_is_one_line_before_any_work(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", dataset={"name": "digits"})
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert_one_error_line(run_cli("run", str(spec), "--out", str(a_file)),
                          f"--out {a_file}: is a file, expected a folder")
    assert_one_error_line(run_cli("run", str(spec), "--out", str(a_file / "run")),
                          f"{a_file} is a file")
    assert a_file.read_text() == "x"


def test_an_unwritable_out_is_refused(tmp_path, monkeypatch):
    """Root may write anywhere, so the permission is simulated (os.access, what the check asks)."""
    from drl_cli.errors import CLIError
    from drl_cli.out_dir import check_output_folder

    check_output_folder(tmp_path / "new" / "run")   # creatable: fine, and nothing is created
    assert not (tmp_path / "new").exists()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(CLIError, match=f"--out {tmp_path / 'run'}: cannot write to the parent "
                                       f"folder {tmp_path}"):
        check_output_folder(tmp_path / "run")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_a_device_this_machine_lacks_is_one_line(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", dataset={"name": "digits"})
    assert_one_error_line(run_cli("run", str(spec), "--out", str(tmp_path / "o"), "--device", "cuda"),
                          "--device cuda: CUDA is not available")
    spec = write_spec(tmp_path / "gpu.yaml", dataset={"name": "digits"}, train={"device": "cuda"})
    assert_one_error_line(run_cli("run", str(spec), "--out", str(tmp_path / "o")),
                          "gpu.yaml: train.device 'cuda': CUDA is not available")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_changed_spec_into_an_existing_out_says_what_differs_and_force_starts_over(tmp_path):
    from drl_engine.checkpoint import list_checkpoints, load_checkpoint
    from drl_engine.datasets import load_dataset
    from drl_engine.spec import load_spec
    from drl_engine.trainer import train

    first = write_spec(tmp_path / "first.yaml", dataset={"name": "digits", "train_limit": 100,
                                                          "test_limit": 40},
                       train={**TINY["train"], "iterations": 2, "checkpoint_every": 2})
    out = tmp_path / "out"
    spec = load_spec(first)
    train(spec, load_dataset(spec.dataset), out / "checkpoints")   # what a first drl run leaves
    edited = write_spec(tmp_path / "edited.yaml", dataset={"name": "digits", "train_limit": 100,
                                                            "test_limit": 40},
                        model={**TINY["model"], "latent_dim": 3},
                        train={**TINY["train"], "iterations": 2, "checkpoint_every": 2},
                        evaluate={**TINY["evaluate"], "code_usage_images": 0},
                        sample={**TINY["sample"], "steps": 2})
    line = assert_one_error_line(run_cli("run", str(edited), "--out", str(out)),
                                 f"--out {out} holds checkpoints of a different run",
                                 "model.latent_dim (checkpoint 4, now 3)", "--force")
    assert "another --out" in line
    before = list_checkpoints(out / "checkpoints")

    assert main(["run", str(edited), "--out", str(out), "--force"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["spec"]["model"]["latent_dim"] == 3 and metrics["train"]["steps"] == 2
    assert np.load(out / "embeddings" / "test_t=0.500.npy").shape == (40, 3)
    (latest,) = list_checkpoints(out / "checkpoints")   # the old run's were discarded
    assert load_checkpoint(latest)["spec"]["model"]["latent_dim"] == 3 and before != []


def test_oversubscription_warning_when_others_load_plus_threads_exceed_the_cores():
    from drl_cli.cpu_load import oversubscription_warning

    # Two other trainings on 2 cores (the 80-minute demo): torch's 2 threads do not fit.
    warning = oversubscription_warning(1.9, 2, 2)
    assert warning and "OMP_NUM_THREADS=1" in warning and "load average 1.9 on 2 cores" in warning
    assert oversubscription_warning(1.2, 2, 2)               # one busy core + 2 threads
    assert oversubscription_warning(0.3, 2, 2) is None      # a quiet machine
    assert oversubscription_warning(3.0, 2, 1) is None      # one thread cannot wait on itself
    assert oversubscription_warning(5.0, 16, 8) is None
    assert oversubscription_warning(None, 2, 2) is None     # no load average on this OS


def test_submit_overrides_are_drl_runs(tmp_path):
    """drl submit takes --set and --iterations (the same function as drl run) and sends only
    what the file and the command line set, not every default."""
    from drl.client import submitted_fields
    from drl_cli.overrides import spec_with_overrides

    spec_file = write_spec(tmp_path / "spec.yaml", dataset={"name": "digits"})
    spec = spec_with_overrides(spec_file, ["model.latent_dim=3", "name=x"], iterations=7)
    sent = submitted_fields(spec)
    assert sent["train"]["iterations"] == 7 and sent["model"]["latent_dim"] == 3 and sent["name"] == "x"
    assert "objective" not in sent and "lr" not in sent["train"]
    proc = run_cli("submit", str(spec_file), "--set", "model.latent_dim=0", "--url", "http://127.0.0.1:9")
    assert_one_error_line(proc, "model.latent_dim")


def unlabelled_digits_npz(path: Path, n: int = 200) -> Path:
    """Digits images without labels: a run that skips probes and FD-LeNet, so it is quick."""
    from drl_engine.datasets.digits import digits_images

    np.savez(path, x_train=digits_images()[0][:n, 0])
    return path


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_the_rerun_resumes_bit_for_bit(tmp_path):
    """SIGINT mid-training: a checkpoint at the step it reached (not the last periodic one),
    one line and exit 130; the rerun says where it resumes and ends with exactly the weights
    of a run never interrupted."""
    import torch

    from drl_engine.checkpoint import latest_checkpoint, load_checkpoint
    from drl_engine.datasets import load_dataset
    from drl_engine.spec import load_spec
    from drl_engine.trainer import train

    spec_file = write_spec(
        tmp_path / "spec.yaml",
        dataset={"name": "npz", "path": str(unlabelled_digits_npz(tmp_path / "digits.npz"))},
        train={**TINY["train"], "iterations": 200, "checkpoint_every": 10},
        evaluate={"t_grid": [0.5], "code_usage_images": 0},
        sample={"sampler": "euler_maruyama", "steps": 2, "count": 2})
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DRL_NO_PROGRESS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "drl_cli.main", "run", str(spec_file),
                              "--out", str(out)], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "ckpt_00000010.pt").exists():   # training is under way
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)

    assert first.returncode == 130, stderr
    assert "Traceback" not in stderr
    stopped = re.fullmatch(r"drl: interrupted at step (\d+); checkpoint saved; rerun the same "
                           r"command to resume", stderr.strip().splitlines()[-1])
    assert stopped, stderr
    step = int(stopped.group(1))
    assert 10 <= step < 200
    assert latest_checkpoint(out / "checkpoints").name == f"ckpt_{step:08d}.pt"
    assert not (out / "metrics.json").exists()

    rerun = run_cli("run", str(spec_file), "--out", str(out))
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from step {step} of 200" in rerun.stdout

    spec = load_spec(spec_file)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as the subprocesses ran
    try:
        train(spec, load_dataset(spec.dataset), tmp_path / "uninterrupted")
    finally:
        torch.set_num_threads(threads)
    resumed = load_checkpoint(out / "checkpoints" / "ckpt_00000200.pt")
    reference = load_checkpoint(tmp_path / "uninterrupted" / "ckpt_00000200.pt")
    for name, weights in (("model", lambda c: c["model"]), ("ema", lambda c: c["ema"]["shadow"])):
        expected, got = weights(reference), weights(resumed)
        assert list(got) == list(expected) and expected, name
        assert all(torch.equal(got[k], v) for k, v in expected.items()), name


def test_the_training_bar_of_a_resumed_run_starts_at_its_step():
    import io

    from drl_cli.run_cmd import TrainingBar
    from drl_engine.trainer import TrainProgress

    stream = io.StringIO()
    bar = TrainingBar(200, file=stream)
    bar.resumed(120)
    assert "120/200" in stream.getvalue()
    bar(TrainProgress(step=130, total=200, loss=1.0, images_per_s=10.0, lr=1e-3))
    assert "130/200" in stream.getvalue()
    bar.close()
