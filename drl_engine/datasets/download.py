"""Fetch the MNIST / Fashion-MNIST files for a user with internet access.

Only ever called explicitly (the CLI or a user's script); the engine never downloads. Each
file is streamed to a temporary name next to its destination, checked against the published
md5, and only then renamed into place, so an interrupted or corrupt download never leaves a
file that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .core import DatasetError
from .mnist import IDX_SOURCES, IdxSource

# progress(file_name, bytes_done, bytes_total or None when the server does not say)
Progress = Callable[[str, int, int | None], None]

_CHUNK = 1 << 16
_TIMEOUT_S = 60


def _md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, md5: str, progress: Progress | None) -> None:
    """Stream `url` to a temporary file beside `dest`, verify, then rename atomically."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    done = 0
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(dest.name, done, total)
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", None) or err
                raise DatasetError(f"{dest}: download from {url} failed ({reason})") from None
        got = digest.hexdigest()
        if got != md5:
            raise DatasetError(f"{dest}: the file downloaded from {url} is corrupt (md5 {md5} "
                               f"expected, got {got}); it was discarded")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def download_dataset(name: str, data_dir: Path, base_url: str | None = None,
                     progress: Progress | None = None) -> list[Path]:
    """Fetch the four IDX files of `name` ('mnist' or 'fashion_mnist') into
    `data_dir/<mnist|fashion-mnist>/`, skipping files already there with the right md5.

    `base_url` defaults to a public mirror of the original files. Returns the four paths.
    """
    source: IdxSource | None = IDX_SOURCES.get(name)
    if source is None:
        raise DatasetError(f"download_dataset: unknown dataset {name!r}; expected one of "
                           f"{', '.join(IDX_SOURCES)}")
    base = (base_url or source.default_base_url).rstrip("/") + "/"
    folder = Path(data_dir).expanduser().absolute() / source.subdirs[0]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for file_name, md5 in source.md5.items():
        dest = folder / file_name
        if not (dest.is_file() and _md5_of(dest) == md5):
            _fetch(base + file_name, dest, md5, progress)
        paths.append(dest)
    return paths
