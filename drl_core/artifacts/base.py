"""The artifact store interface, its errors and the helpers both backends share.

An artifact is an immutable blob under a predictable key such as
`experiments/<id>/checkpoints/ckpt_00001000.pt` or `experiments/<id>/embeddings/test/t=0.500.npy`.
Keys are validated here once, so no backend can be tricked into writing outside its root.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from drl_engine.fileio import fsync_directory

DEFAULT_CONTENT_TYPE = "application/octet-stream"
CHUNK_SIZE = 1024 * 1024  # streaming copies move this much at a time
TMP_PREFIX = ".drl-tmp-"  # in-flight atomic writes; never listed, never a valid key segment


class ArtifactStoreError(RuntimeError):
    """The store cannot be used: endpoint unreachable, bucket missing, root not a directory...

    `transient`: the store may answer if asked again later (unreachable, a 5xx, throttled),
    so a job stopped by it is retried (drl_core/faults.py); `disk_full`: the store has no
    room left. Neither: a real misconfiguration (bucket missing, access denied).
    """

    def __init__(self, message: str, *, transient: bool = False, disk_full: bool = False) -> None:
        super().__init__(message)
        self.transient, self.disk_full = transient, disk_full


class ArtifactNotFound(KeyError):
    """No artifact under the key. A KeyError so `except KeyError` callers keep working."""

    def __init__(self, key: str, where: str | None = None) -> None:
        super().__init__(key, where)  # both in args, so the exception pickles (Celery results)
        self.key = key
        self.message = f"artifact {key!r} not found" + (f" in {where}" if where else "")

    def __str__(self) -> str:  # KeyError's str() would wrap the message in quotes
        return self.message


@dataclass(frozen=True)
class StoredArtifact:
    """What a write returns, and what an artifact row records."""

    key: str
    size: int
    sha256: str


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative key, else raise ValueError naming it.

    Rejected: empty, absolute, backslashes, NUL, and empty / `.` / `..` segments (so
    `a//b`, `a/./b` and a trailing `/` cannot alias another key on one backend but not the
    other), and segments that look like the local backend's temporary files.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"artifact key {key!r}: expected a non-empty string")
    if key.startswith("/"):
        raise ValueError(f"artifact key {key!r}: expected a relative key, not an absolute path")
    if "\\" in key or "\x00" in key:
        raise ValueError(f"artifact key {key!r}: backslashes and NUL characters are not allowed")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(
                f"artifact key {key!r}: empty, '.' and '..' path segments are not allowed"
            )
        if segment.startswith(TMP_PREFIX):
            raise ValueError(f"artifact key {key!r}: segments may not start with {TMP_PREFIX!r}")
    return key


def normalize_prefix(prefix: str) -> str:
    """A listing/deletion prefix as a directory: `experiments/1` -> `experiments/1/`.

    Prefixes always end at a `/` so that `experiments/1` never matches `experiments/10/...`.
    The empty prefix stays empty (everything).
    """
    if prefix == "":
        return ""
    if prefix.strip("/") == "":
        raise ValueError(f"artifact prefix {prefix!r}: use '' for everything")
    return validate_key(prefix.rstrip("/")) + "/"


class HashingReader:
    """Wraps a binary stream; counts and sha256-hashes exactly the bytes read through it,
    so a streamed upload reports the digest of what was sent without a second pass."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._sha256.update(data)
        self.size += len(data)
        return data

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


class ArtifactReader:
    """A streaming read of one artifact. Close it, or use it as a context manager.

    `iter_chunks` suits HTTP streaming responses: it closes the reader once exhausted.
    """

    def __init__(self, raw: BinaryIO, release: Callable[[], None] | None = None) -> None:
        self._raw = raw
        self._release = release or raw.close
        self.closed = False

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed ArtifactReader")
        return self._raw.read() if size is None or size < 0 else self._raw.read(size)

    def iter_chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        try:
            while chunk := self.read(chunk_size):
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._release()

    def __enter__(self) -> ArtifactReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """Open a temporary file next to `path`; on success fsync it and os.replace it onto
    `path`, on any error remove it. A crash therefore leaves either the old file or the
    new one, never half of one (the temporary is in the same directory, so the rename is
    atomic on POSIX)."""
    tmp = path.parent / f"{TMP_PREFIX}{secrets.token_hex(8)}-{path.name}"
    for attempt in range(3):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: never share a temporary with a concurrent writer; mode 0o666 lets the
            # umask decide the final permissions, as a plain open() would.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileNotFoundError:
            # A concurrent delete pruned the (momentarily empty) directory; make it again.
            if attempt == 2:
                raise
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


class ArtifactStore(ABC):
    """One interface, two backends (local directory, S3/MinIO).

    Writes are idempotent: writing a key again replaces it, so a job that runs twice just
    rewrites the same keys. Reads of a missing key raise ArtifactNotFound; an unusable
    store raises ArtifactStoreError; a malformed key raises ValueError.
    """

    # -- writes ------------------------------------------------------------------------

    def put_bytes(
        self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> StoredArtifact:
        return self._put_counted(validate_key(key), io.BytesIO(data), len(data), content_type)

    def put_file(
        self, key: str, path: Path, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> StoredArtifact:
        """Stream the file at `path` into the store; sha256 is computed while reading."""
        validate_key(key)
        with Path(path).open("rb") as handle:
            return self._put_counted(key, handle, os.fstat(handle.fileno()).st_size, content_type)

    def _put_counted(
        self, key: str, stream: BinaryIO, length: int, content_type: str
    ) -> StoredArtifact:
        reader = HashingReader(stream)
        self._put_stream(key, reader, length, content_type)
        return StoredArtifact(key=key, size=reader.size, sha256=reader.sha256)

    @abstractmethod
    def _put_stream(self, key: str, stream: HashingReader, length: int, content_type: str) -> None:
        """Write everything `stream` yields (expected: `length` bytes) under a validated key."""

    # -- reads -------------------------------------------------------------------------

    @abstractmethod
    def open(self, key: str) -> ArtifactReader:
        """Start a streaming read; raises ArtifactNotFound before returning if missing."""

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as reader:
            return reader.read()

    def download(self, key: str, path: Path) -> Path:
        """Copy the artifact to `path` atomically (creating parent directories)."""
        path = Path(path)
        with self.open(key) as reader, atomic_write(path) as handle:
            while chunk := reader.read(CHUNK_SIZE):
                handle.write(chunk)
        return path

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Sorted keys under `prefix` (treated as a directory: see normalize_prefix)."""

    # -- deletes -----------------------------------------------------------------------

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one artifact; a missing key is not an error."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every artifact under the non-empty `prefix`; return how many."""

    # -- health ------------------------------------------------------------------------

    @abstractmethod
    def check(self) -> None:
        """Readiness: return if usable, else raise ArtifactStoreError saying why."""


def require_delete_prefix(prefix: str) -> str:
    """normalize_prefix, refusing the empty prefix: it would delete every artifact."""
    if prefix == "":
        raise ValueError("delete_prefix '': refusing to delete every artifact")
    return normalize_prefix(prefix)
