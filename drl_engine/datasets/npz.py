"""A user's images in a numpy .npz file, and the array checks shared with the CIFAR npz.

Layout (`dataset: {name: npz, path: FILE}`): `x_train` uint8, N x H x W (grayscale) or
N x H x W x C (channels last); optional integer `y_train`; optional `x_test` / `y_test`,
else a seeded 10% of the training images is held out as the test split.

The layout's rules are checked on anything with a `shape` and a `dtype`: the loaded arrays
(`load_npz_dataset`), or the .npy headers inside the archive (`check_npz_file`, what a submit
can afford: it reads no data). Only the labels' values need the data (`check_label_values`).
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .arrays import build_dataset, seeded_split
from .core import DatasetError, ImageDataset

NPZ_LAYOUT = ("an .npz with x_train (N x H x W or N x H x W x C, uint8) and optional "
              "y_train (N,), x_test, y_test")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# Fixed so that every run of the same file sees the same held-out images.
NPZ_SPLIT_SEED = 0
NPZ_TEST_FRACTION = 0.1


_NUMPY_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")  # zip (.npz), empty zip, .npy
_UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


class ArrayLike(Protocol):
    """What the layout checks look at: a loaded array, or an `ArrayHeader`."""

    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class ArrayHeader:
    """An .npy member's shape and dtype, read from its header without its data."""

    shape: tuple[int, ...]
    dtype: np.dtype


def _starts_like_numpy(path: Path) -> bool:
    """Whether the file begins as an .npz or .npy does (unreadable: left to np.load to say)."""
    try:
        with path.open("rb") as f:
            return f.read(6).startswith(_NUMPY_MAGICS)
    except OSError:
        return True


@contextmanager
def _open_npz(path: Path, required: tuple[str, ...], expected: str) -> Iterator[np.lib.npyio.NpzFile]:
    """The archive at `path`, holding each of `required`; DatasetError naming the file if not.

    allow_pickle stays off: reading a data file must never run code from it.
    """
    try:
        is_file = path.is_file()
    except OSError as err:   # e.g. a name longer than the filesystem allows (ENAMETOOLONG)
        raise DatasetError(f"{path}: cannot be read ({err.strerror}); "
                           f"expected {expected}") from None
    if is_file and not _starts_like_numpy(path):
        # np.load would take it for a pickle and suggest allow_pickle, which must stay off.
        raise DatasetError(f"{path}: not a numpy .npz file (neither a zip archive nor an .npy "
                           f"array; np.savez writes one); expected {expected}")
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; expected {expected}") from None
    except _UNREADABLE as err:
        raise DatasetError(f"{path}: not a readable numpy .npz file ({err}); "
                           f"expected {expected}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path}: a single .npy array, not an .npz archive; expected {expected}")
    with npz:
        missing = [k for k in required if k not in npz.files]
        if missing:
            found = ", ".join(npz.files) or "none"
            raise DatasetError(f"{path}: no array {missing[0]!r} (arrays found: {found}); "
                               f"expected {expected}")
        yield npz


def _unreadable_array(path: Path, key: str, reason: object, expected: str) -> DatasetError:
    return DatasetError(f"{path}: array {key!r} cannot be read ({reason}); expected {expected}")


def read_npz_arrays(path: Path, keys: tuple[str, ...], required: tuple[str, ...],
                    expected: str) -> dict[str, np.ndarray]:
    """The arrays `keys` present in the .npz at `path`; each of `required` must be there."""
    with _open_npz(path, required, expected) as npz:
        arrays = {}
        for key in keys:
            if key not in npz.files:
                continue
            try:
                arrays[key] = npz[key]
            except _UNREADABLE as err:
                # A corrupt member, or an object array (which would need pickle).
                raise _unreadable_array(path, key, err, expected) from None
        return arrays


def _member_header(npz: np.lib.npyio.NpzFile, key: str) -> ArrayHeader:
    with npz.zip.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:   # format 3.0 (utf-8 field names), rare: read the array itself
            array = npz[key]
            return ArrayHeader(array.shape, array.dtype)
    return ArrayHeader(tuple(shape), dtype)


def read_npz_headers(path: Path, keys: tuple[str, ...], required: tuple[str, ...],
                     expected: str) -> dict[str, ArrayHeader]:
    """`read_npz_arrays`' checks and answer, as headers: each array's shape and dtype, its data
    left unread (an object array is refused as its load would be)."""
    with _open_npz(path, required, expected) as npz:
        headers = {}
        for key in keys:
            if key not in npz.files:
                continue
            try:
                header = _member_header(npz, key)
            except (KeyError, *_UNREADABLE) as err:
                raise _unreadable_array(path, key, err, expected) from None
            if header.dtype.hasobject:
                raise _unreadable_array(path, key, "Object arrays cannot be loaded when "
                                                   "allow_pickle=False", expected)
            headers[key] = header
        return headers


def require_uint8(x: ArrayLike, key: str, path: Path) -> None:
    if x.dtype != np.uint8:
        raise DatasetError(
            f"{path}: {key} must be uint8 pixel values 0..255, got {x.dtype}; floats in [0, 1] "
            f"convert with (x * 255).round().astype(np.uint8)")


def check_label_shape(y: ArrayLike, key: str, path: Path, n_images: int, images_key: str) -> None:
    """Integer class labels, one per image."""
    if y.dtype.kind not in "iu":
        raise DatasetError(f"{path}: {key} must hold integer class labels, got {y.dtype}")
    if len(y.shape) != 1:
        raise DatasetError(f"{path}: {key} must be 1-D (N,), got shape {y.shape}")
    if y.shape[0] != n_images:
        raise DatasetError(f"{path}: {key} has {y.shape[0]} labels for the {n_images} images in "
                           f"{images_key}; expected one label per image")


def check_label_values(y: np.ndarray, key: str, path: Path) -> None:
    """No negative class label (what only the data shows)."""
    if len(y) and y.min() < 0:
        raise DatasetError(f"{path}: {key} must hold class labels >= 0, found {int(y.min())}")


def check_labels(y: np.ndarray, key: str, path: Path, n_images: int, images_key: str) -> None:
    """Integer class labels, one per image, none negative."""
    check_label_shape(y, key, path, n_images, images_key)
    check_label_values(y, key, path)


def _nchw_shape(x: ArrayLike, key: str, path: Path) -> tuple[int, int, int, int]:
    """The (N, C, H, W) shape of `key`'s images: uint8, N x H x W or N x H x W x C, not empty."""
    require_uint8(x, key, path)
    if len(x.shape) == 3:
        n, h, w = x.shape
        shape = (n, 1, h, w)
    elif len(x.shape) == 4:
        if not 1 <= x.shape[3] <= 4:
            raise DatasetError(
                f"{path}: {key} of shape {x.shape} is not N x H x W x C with channels last "
                f"(C in 1..4); for channels-first data save x.transpose(0, 2, 3, 1)")
        n, h, w, c = x.shape
        shape = (n, c, h, w)
    else:
        raise DatasetError(f"{path}: {key} must be N x H x W or N x H x W x C, "
                           f"got {len(x.shape)} dimensions {x.shape}")
    if shape[0] == 0 or 0 in shape[2:]:
        raise DatasetError(f"{path}: {key} holds no images (shape {shape})")
    return shape


def check_npz_layout(arrays: Mapping[str, ArrayLike], path: Path) -> None:
    """Every rule of the layout (module docstring) that shapes and dtypes decide."""
    train = _nchw_shape(arrays["x_train"], "x_train", path)
    y_train = arrays.get("y_train")
    if y_train is not None:
        check_label_shape(y_train, "y_train", path, train[0], "x_train")
    if "x_test" in arrays:
        test = _nchw_shape(arrays["x_test"], "x_test", path)
        if test[1:] != train[1:]:
            raise DatasetError(f"{path}: x_test images are {test[1:]} (C, H, W) but x_train "
                               f"images are {train[1:]}; expected the same shape")
        y_test = arrays.get("y_test")
        if (y_train is None) != (y_test is None):
            given, absent = ("y_train", "y_test") if y_test is None else ("y_test", "y_train")
            raise DatasetError(f"{path}: {given} is given but {absent} is not; expected labels "
                               f"for both splits or for neither")
        if y_test is not None:
            check_label_shape(y_test, "y_test", path, test[0], "x_test")
    elif "y_test" in arrays:
        raise DatasetError(f"{path}: y_test is given without x_test; expected both or neither")
    elif train[0] < 2:
        raise DatasetError(f"{path}: x_train holds {train[0]} image; at least 2 are "
                           f"needed to hold out a test split (or give x_test)")


def _images_nchw(x: np.ndarray) -> np.ndarray:
    """Images as N x C x H x W (grayscale gains a channel, channels-last is transposed)."""
    return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)


def resolve_user_path(path: str | Path) -> Path:
    """A spec's file path: `~` expanded, relative paths against the current directory."""
    return Path(path).expanduser().absolute()


def check_npz_file(path: str | Path) -> None:
    """The DatasetError `load_npz_dataset` would raise for a missing, foreign or mis-shaped
    file, found from the archive's .npy headers (read_npz_headers) without reading its data."""
    path = resolve_user_path(path)
    check_npz_layout(read_npz_headers(path, NPZ_KEYS, ("x_train",), NPZ_LAYOUT), path)


def load_npz_dataset(path: str | Path, train_limit: int | None = None,
                     test_limit: int | None = None) -> ImageDataset:
    """The user's .npz as an ImageDataset (see the module docstring for the layout)."""
    path = resolve_user_path(path)
    arrays = read_npz_arrays(path, NPZ_KEYS, ("x_train",), NPZ_LAYOUT)
    check_npz_layout(arrays, path)
    for key in ("y_train", "y_test"):
        if key in arrays:
            check_label_values(arrays[key], key, path)

    x_train, y_train = _images_nchw(arrays["x_train"]), arrays.get("y_train")
    if "x_test" in arrays:
        x_test, y_test = _images_nchw(arrays["x_test"]), arrays.get("y_test")
    else:
        train_idx, test_idx = seeded_split(len(x_train), NPZ_TEST_FRACTION, NPZ_SPLIT_SEED)
        x_train, x_test = x_train[train_idx], x_train[test_idx]
        if y_train is not None:
            y_train, y_test = y_train[train_idx], y_train[test_idx]
        else:
            y_test = None

    return build_dataset("npz", x_train, y_train, x_test, y_test, train_limit=train_limit,
                         test_limit=test_limit)
