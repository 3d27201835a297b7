"""What a run records about itself (drl_engine/provenance.py): the code's commit (an image's
baked-in one, else the checkout's, else "unknown"), the versions, the machine, and the
dataset files' fingerprint, each file hashed once per (path, mtime, size).

A worker's train job records it on its experiment (tests/test_worker.py), `drl run` in
metrics.json (tests/test_cli_run.py)."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from drl_engine import provenance
from drl_engine.datasets import DatasetError
from drl_engine.datasets.digits import digits_file
from drl_engine.provenance import (GIT_COMMIT_ENV, SOURCE_ROOT, collect_provenance, cpu_model,
                                   dataset_fingerprint, file_sha256, read_code_commit)
from drl_engine.spec import DatasetSpec

REPO_ROOT = Path(__file__).resolve().parents[1]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_run_from_this_checkout_records_its_commit_versions_machine_and_data(monkeypatch) -> None:
    monkeypatch.delenv(GIT_COMMIT_ENV, raising=False)
    provenance.code_commit.cache_clear()
    head_before = git(REPO_ROOT, "rev-parse", "HEAD")
    recorded = collect_provenance(DatasetSpec(name="digits"), torch.device("cpu"))
    provenance.code_commit.cache_clear()

    assert SOURCE_ROOT == REPO_ROOT
    # (another engineer may commit meanwhile: then it is the commit of one of the two reads)
    assert recorded["git_commit"] in {head_before, git(REPO_ROOT, "rev-parse", "HEAD")}
    assert isinstance(recorded["git_dirty"], bool)
    assert recorded["drl_version"] == metadata.version("drl")
    assert (recorded["python"], recorded["torch"]) == (platform.python_version(), torch.__version__)
    assert (recorded["device"], recorded["cuda"], recorded["cudnn"]) == ("cpu", None, None)
    assert recorded["device_model"] == cpu_model() != ""
    assert recorded["host"] == socket.gethostname()
    data = digits_file().read_bytes()
    file_hash = sha256_of(data)
    assert recorded["dataset"] == {
        "name": "digits", "sha256": sha256_of(f"{file_hash}  digits.csv.gz\n".encode()),
        "files": [{"path": str(digits_file().resolve()), "size": len(data), "sha256": file_hash}]}


def test_the_commit_is_the_images_else_the_checkouts_else_unknown(tmp_path: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.setenv(GIT_COMMIT_ENV, "0123abc")
    assert read_code_commit(REPO_ROOT) == ("0123abc", None)   # baked into the image
    monkeypatch.delenv(GIT_COMMIT_ENV)

    assert read_code_commit(tmp_path) == ("unknown", None)    # no repository at all
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "tracked.txt").write_text("a\n")
    for args in (["init", "-q"], ["add", "tracked.txt"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first"]):
        git(repo, *args)
    commit = git(repo, "rev-parse", "HEAD")
    assert read_code_commit(repo) == (commit, False)
    (repo / "tracked.txt").write_text("b\n")
    (repo / "untracked.txt").write_text("c\n")
    assert read_code_commit(repo) == (commit, True)           # a tracked file was changed
    # A package inside some other repository (a virtualenv in a project) is not that commit.
    assert read_code_commit(repo / "pkg") == ("unknown", None)
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert read_code_commit(repo) == ("unknown", None)        # no git on the machine


def test_each_file_is_hashed_once_per_path_mtime_and_size(tmp_path: Path) -> None:
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=np.zeros((10, 8, 8), np.uint8))
    first = path.read_bytes()
    assert file_sha256(path) == sha256_of(first)
    stat = path.stat()
    changed = first[:-1] + bytes([first[-1] ^ 1])   # same size
    path.write_bytes(changed)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_sha256(path) == sha256_of(first)     # cached: not read again
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_sha256(path) == sha256_of(changed)   # a new version: read again

    fingerprint = dataset_fingerprint(DatasetSpec(name="npz", path=str(path)))
    assert [f["path"] for f in fingerprint["files"]] == [str(path.resolve())]


def test_mnist_is_fingerprinted_by_its_four_files(data_dir: Path) -> None:
    fingerprint = dataset_fingerprint(DatasetSpec(name="mnist", data_dir=str(data_dir)))
    names = [Path(f["path"]).name for f in fingerprint["files"]]
    assert [n.removesuffix(".gz") for n in names] == [
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte"]
    listing = "".join(f"{f['sha256']}  {name}\n" for f, name in zip(fingerprint["files"], names))
    assert fingerprint["sha256"] == sha256_of(listing.encode())


def test_files_that_cannot_be_read_do_not_stop_the_run(tmp_path: Path) -> None:
    missing = DatasetSpec(name="npz", path=str(tmp_path / "gone.npz"))
    with pytest.raises((DatasetError, OSError)):
        dataset_fingerprint(missing)
    recorded = collect_provenance(missing, torch.device("cpu"))
    assert recorded["dataset"]["sha256"] is None and "gone.npz" in recorded["dataset"]["error"]
