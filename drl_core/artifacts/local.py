"""Local-directory backend: the embedded default. Key `a/b/c.pt` is the file `<root>/a/b/c.pt`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from drl_core.artifacts.base import (
    CHUNK_SIZE,
    TMP_PREFIX,
    ArtifactNotFound,
    ArtifactReader,
    ArtifactStore,
    ArtifactStoreError,
    HashingReader,
    atomic_write,
    normalize_prefix,
    require_delete_prefix,
    validate_key,
)


class LocalArtifactStore(ArtifactStore):
    """Artifacts as files under `root`, written atomically (temporary file + os.replace).

    The root is created on first write (or by check()); directories emptied by deletes are
    removed so an experiment's deletion leaves no husk behind. content_type is not stored.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        # validate_key forbids '..', absolute keys and backslashes, so this stays under root.
        return self.root.joinpath(*validate_key(key).split("/"))

    # -- writes ------------------------------------------------------------------------

    def _put_stream(self, key: str, stream: HashingReader, length: int, content_type: str) -> None:
        path = self._path(key)
        try:
            with atomic_write(path) as handle:
                shutil.copyfileobj(stream, handle, CHUNK_SIZE)
        except OSError as exc:
            # e.g. the root is a file, the disk is full, or `a/b` is a file and the key is `a/b/c`
            raise ArtifactStoreError(
                f"cannot write artifact {key!r} under {self.root}: {exc.strerror or exc}"
            ) from exc

    # -- reads -------------------------------------------------------------------------

    def open(self, key: str) -> ArtifactReader:
        path = self._path(key)
        try:
            return ArtifactReader(path.open("rb"))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactNotFound(key, str(self.root)) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise ArtifactNotFound(key, str(self.root))
        return path.stat().st_size

    def list(self, prefix: str) -> list[str]:
        prefix = normalize_prefix(prefix)
        top = self.root.joinpath(*prefix.rstrip("/").split("/")) if prefix else self.root
        if not top.is_dir():
            return []
        keys = []
        for directory, _, files in os.walk(top):
            relative = Path(directory).relative_to(self.root).as_posix()
            for name in files:
                if not name.startswith(TMP_PREFIX):
                    keys.append(name if relative == "." else f"{relative}/{name}")
        return sorted(keys)

    # -- deletes -----------------------------------------------------------------------

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_file():
            path.unlink(missing_ok=True)
            self._remove_empty_parents(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        prefix = require_delete_prefix(prefix)
        top = self.root.joinpath(*prefix.rstrip("/").split("/"))
        if not top.is_dir():
            return 0
        deleted = 0
        for directory, _, files in os.walk(top, topdown=False):
            for name in files:
                (Path(directory) / name).unlink(missing_ok=True)
                deleted += not name.startswith(TMP_PREFIX)
            _try_rmdir(Path(directory))
        self._remove_empty_parents(top.parent)
        return deleted

    def _remove_empty_parents(self, directory: Path) -> None:
        """rmdir upwards until a non-empty directory or the root (which stays)."""
        while directory != self.root and directory.is_relative_to(self.root):
            if not _try_rmdir(directory):
                return
            directory = directory.parent

    # -- health ------------------------------------------------------------------------

    def check(self) -> None:
        """Create the root if needed and prove it writable with a probe file."""
        if self.root.exists() and not self.root.is_dir():
            raise ArtifactStoreError(
                f"local artifact directory {self.root} exists but is not a directory"
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root, prefix=TMP_PREFIX):
                pass
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ArtifactStoreError(
                f"local artifact directory {self.root} is not a writable directory: {reason}"
            ) from None


def _try_rmdir(directory: Path) -> bool:
    """rmdir if empty; False if it is not (or is gone): another writer may be filling it."""
    try:
        directory.rmdir()
    except OSError:
        return False
    return True
