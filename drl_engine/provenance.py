"""Where a result came from: the code, the software, the machine and the data of a run.

`collect_provenance(dataset, device)` is what a training records, the service's train job on
its experiment (worker/jobs/train.py) and `drl run` in metrics.json (drl_engine/pipeline.py):

    drl_version, git_commit, git_dirty      the code
    python, torch, cuda, cudnn               the software (cuda and cudnn None on a CPU)
    device, device_model, host               the machine
    dataset: {name, sha256, files: [{path, size, sha256}]}   the data

`git_commit` is the commit of the code this process runs, read once at start-up
(`code_commit`, called when a worker or `drl run` starts: a checkout changed later is not
the code in memory): $DRL_GIT_COMMIT, which the image build bakes in (Dockerfile.gpu: the
image holds no .git), else `git rev-parse HEAD` of the checkout the package was imported from,
else "unknown". `git_dirty` says whether that checkout's tracked files differed from the
commit (None when unknown).

The dataset's fingerprint is the sha256 of its files' `sha256sum` lines (`<sha256>  <name>`,
in the order the loader names them), so it changes with any byte of any file the load reads.
Each file's hash is cached by (path, mtime, size) for the life of the process: a worker hashes
a dataset once, not once per job.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import threading
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .datasets import DatasetError, dataset_files
from .spec import DatasetSpec

GIT_COMMIT_ENV = "DRL_GIT_COMMIT"
UNKNOWN = "unknown"
# The checkout the package was imported from (an editable install, or the source tree itself).
SOURCE_ROOT = Path(__file__).resolve().parents[1]
GIT_TIMEOUT_S = 10.0
_HASH_CHUNK = 1 << 20


# --- the code ------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> str | None:
    """`git -C root args...`'s output, or None when git or the repository is not there."""
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def read_code_commit(root: Path = SOURCE_ROOT) -> tuple[str, bool | None]:
    """(commit, dirty) of the code at `root`, read now (see the module docstring for the order)."""
    baked = os.environ.get(GIT_COMMIT_ENV, "").strip()
    if baked:
        return baked, None
    # Only a repository whose top is `root` itself: an installed package may sit inside some
    # other repository (a virtualenv in a project), whose commit says nothing about drl.
    top = _git(root, "rev-parse", "--show-toplevel")
    commit = _git(root, "rev-parse", "HEAD") if top and Path(top).resolve() == root.resolve() else None
    if not commit:
        return UNKNOWN, None
    changes = _git(root, "status", "--porcelain", "--untracked-files=no")
    return commit, None if changes is None else bool(changes)


@cache
def code_commit() -> tuple[str, bool | None]:
    """`read_code_commit()`, read on the first call and kept: call it at start-up."""
    return read_code_commit()


def drl_version() -> str:
    try:
        return metadata.version("drl")
    except metadata.PackageNotFoundError:
        return UNKNOWN


# --- the machine ---------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def device_facts(device: torch.device) -> dict[str, Any]:
    """The device's model, and the CUDA and cuDNN versions a CUDA device runs with."""
    if device.type == "cuda":
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        return {"device": str(device), "device_model": torch.cuda.get_device_name(device),
                "cuda": torch.version.cuda, "cudnn": str(cudnn) if cudnn else None}
    model = cpu_model() if device.type == "cpu" else device.type
    return {"device": str(device), "device_model": model, "cuda": None, "cudnn": None}


# --- the data ------------------------------------------------------------------------------

_file_hashes: dict[tuple[str, int, int], str] = {}
_file_hashes_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    """The file's sha256 (hex), cached by (path, mtime, size)."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _file_hashes_lock:
        if key in _file_hashes:
            return _file_hashes[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    with _file_hashes_lock:
        _file_hashes[key] = digest.hexdigest()
    return _file_hashes[key]


def dataset_fingerprint(dataset: DatasetSpec) -> dict[str, Any]:
    """{name, sha256, files} of the files `load_dataset(dataset)` reads (module docstring)."""
    files = [Path(p).resolve() for p in dataset_files(dataset)]
    hashes = [file_sha256(path) for path in files]
    listing = "".join(f"{sha}  {path.name}\n" for sha, path in zip(hashes, files))
    return {"name": dataset.name, "sha256": hashlib.sha256(listing.encode()).hexdigest(),
            "files": [{"path": str(path), "size": path.stat().st_size, "sha256": sha}
                      for path, sha in zip(files, hashes)]}


# --- all of it -----------------------------------------------------------------------------


def collect_provenance(dataset: DatasetSpec, device: torch.device) -> dict[str, Any]:
    """What a run records about itself (the module docstring lists the fields). A dataset
    whose files cannot be hashed (gone since they were loaded) gets sha256 None and the
    reason: a record of the run must not stop the run."""
    commit, dirty = code_commit()
    try:
        data = dataset_fingerprint(dataset)
    except (DatasetError, OSError) as err:
        data = {"name": dataset.name, "sha256": None, "files": [], "error": str(err)}
    return {"drl_version": drl_version(), "git_commit": commit, "git_dirty": dirty,
            "python": platform.python_version(), "torch": torch.__version__,
            **device_facts(device), "host": socket.gethostname(), "dataset": data}
