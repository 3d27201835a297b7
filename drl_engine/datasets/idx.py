"""The IDX format of MNIST and Fashion-MNIST, gzipped or not.

Header (big-endian): a magic number, whose low byte is the number of dimensions and whose
third byte is the element type (0x08 = unsigned byte), then one uint32 per dimension, then
the elements row-major. Images are magic 2051 (0x00000803: N, rows, cols); labels 2049
(0x00000801: N).

`idx_shape` reads only a file's header and its length (a gzip's trailer records the length of
the data it holds), so a missing, foreign or truncated file is found without decompressing it.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .core import DatasetError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
# (magic, number of dimensions) of each kind of file.
_FORMATS = {"image": (IMAGES_MAGIC, 3), "label": (LABELS_MAGIC, 1)}
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


def _check_image_dims(path: Path, fmt: str, shape: tuple[int, ...]) -> None:
    _, rows, cols = shape
    if rows == 0 or cols == 0:
        raise DatasetError(f"{path}: {fmt} with empty images ({rows} x {cols})")


def read_idx_images(path: Path) -> np.ndarray:
    """uint8 (N, rows, cols) from an IDX image file (magic 2051), gzipped or not."""
    raw, fmt = _read_payload(path, "image")
    shape = _header(path, raw, fmt, IMAGES_MAGIC, 3)
    _check_image_dims(path, fmt, shape)
    return _body(path, raw, fmt, shape)


def read_idx_labels(path: Path) -> np.ndarray:
    """uint8 (N,) from an IDX label file (magic 2049), gzipped or not."""
    raw, fmt = _read_payload(path, "label")
    (n,) = _header(path, raw, fmt, LABELS_MAGIC, 1)
    return _body(path, raw, fmt, (n,))


def _head_and_length(path: Path, kind: str, size: int) -> tuple[bytes, int, str]:
    """(the first `size` bytes of the data, the data's length, format name) without reading
    the data: a gzip's length is its trailer's (the last 4 bytes, little-endian, modulo 2**32)."""
    with path.open("rb") as f:
        if f.read(2) != _GZIP_SIGNATURE:
            f.seek(0)
            return f.read(size), os.fstat(f.fileno()).st_size, f"IDX {kind} file"
        f.seek(0)
        with gzip.GzipFile(fileobj=f) as unzipped:
            head = unzipped.read(size)
        f.seek(-4, os.SEEK_END)
        return head, struct.unpack("<I", f.read(4))[0], f"gzipped IDX {kind} file"


def idx_shape(path: Path, kind: str) -> tuple[int, ...]:
    """The shape an IDX `kind` ("image" or "label") file holds, checked as `read_idx_images` /
    `read_idx_labels` would check it (the same DatasetError), from its header and length only.

    When the length does not match the header (a truncated file, or a gzip of several members,
    whose trailer records the last member's length only) the file is read whole, as the loader
    reads it: that says exactly what is wrong, or finds the file sound after all.
    """
    magic, dims = _FORMATS[kind]
    header_size = 4 * (1 + dims)
    try:
        head, length, fmt = _head_and_length(path, kind, header_size)
    except (EOFError, OSError, zlib.error):
        head = None   # missing, unreadable or a corrupt gzip header: the full read says which
    if head is not None:
        shape = _header(path, head, fmt, magic, dims)
        if kind == "image":
            _check_image_dims(path, fmt, shape)
        expected = header_size + int(np.prod(shape))
        if length == (expected % 2**32 if fmt.startswith("gzipped") else expected):
            return shape
    reader = read_idx_images if kind == "image" else read_idx_labels
    return reader(path).shape
