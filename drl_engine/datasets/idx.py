"""The IDX format of MNIST and Fashion-MNIST, gzipped or not.

Header (big-endian): a magic number, whose low byte is the number of dimensions and whose
third byte is the element type (0x08 = unsigned byte), then one uint32 per dimension, then
the elements row-major. Images are magic 2051 (0x00000803: N, rows, cols); labels 2049
(0x00000801: N).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from .core import DatasetError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_GZIP_SIGNATURE = b"\x1f\x8b"


def _read_payload(path: Path, kind: str) -> tuple[bytes, str]:
    """(bytes, format name): decompressed when the file starts with the gzip signature."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; expected an IDX {kind} file") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the IDX {kind} file ({err.strerror})") from None
    if not blob.startswith(_GZIP_SIGNATURE):
        return blob, f"IDX {kind} file"
    try:
        return gzip.decompress(blob), f"gzipped IDX {kind} file"
    except (EOFError, OSError, zlib.error) as err:
        raise DatasetError(f"{path}: truncated or corrupt gzip data ({err}); expected a complete "
                           f"gzipped IDX {kind} file, download it again") from None


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiouAEIOU" else f"a {noun}"


def _header(path: Path, raw: bytes, fmt: str, magic: int, dims: int) -> tuple[int, ...]:
    size = 4 * (1 + dims)
    got = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
    if got != magic:
        found = f"got {got}" if got is not None else f"the data has only {len(raw)} bytes"
        raise DatasetError(f"{path}: not {_a(fmt)} (magic {magic} expected, {found})")
    if len(raw) < size:
        raise DatasetError(f"{path}: truncated header of {_a(fmt)} ({size} bytes expected, "
                           f"the data has {len(raw)})")
    return struct.unpack(f">{dims}I", raw[4:size])


def _body(path: Path, raw: bytes, fmt: str, shape: tuple[int, ...]) -> np.ndarray:
    offset = 4 * (1 + len(shape))
    expected = int(np.prod(shape))
    if len(raw) - offset != expected:
        dims = " x ".join(str(s) for s in shape)
        raise DatasetError(f"{path}: {fmt} of {dims} needs {expected} data bytes after the "
                           f"header, found {len(raw) - offset} (truncated or corrupt file)")
    # A read-only view of the decompressed bytes; build_dataset makes the one copy.
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def read_idx_images(path: Path) -> np.ndarray:
    """uint8 (N, rows, cols) from an IDX image file (magic 2051), gzipped or not."""
    raw, fmt = _read_payload(path, "image")
    n, rows, cols = _header(path, raw, fmt, IMAGES_MAGIC, 3)
    if rows == 0 or cols == 0:
        raise DatasetError(f"{path}: {fmt} with empty images ({rows} x {cols})")
    return _body(path, raw, fmt, (n, rows, cols))


def read_idx_labels(path: Path) -> np.ndarray:
    """uint8 (N,) from an IDX label file (magic 2049), gzipped or not."""
    raw, fmt = _read_payload(path, "label")
    (n,) = _header(path, raw, fmt, LABELS_MAGIC, 1)
    return _body(path, raw, fmt, (n,))
