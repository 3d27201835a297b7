"""A user's images in a numpy .npz file, and the array checks shared with the CIFAR npz.

Layout (`dataset: {name: npz, path: FILE}`): `x_train` uint8, N x H x W (grayscale) or
N x H x W x C (channels last); optional integer `y_train`; optional `x_test` / `y_test`,
else a seeded 10% of the training images is held out as the test split.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from .arrays import build_dataset, seeded_split
from .core import DatasetError, ImageDataset

NPZ_LAYOUT = ("an .npz with x_train (N x H x W or N x H x W x C, uint8) and optional "
              "y_train (N,), x_test, y_test")
# Fixed so that every run of the same file sees the same held-out images.
NPZ_SPLIT_SEED = 0
NPZ_TEST_FRACTION = 0.1


_NUMPY_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")  # zip (.npz), empty zip, .npy


def _starts_like_numpy(path: Path) -> bool:
    """Whether the file begins as an .npz or .npy does (unreadable: left to np.load to say)."""
    try:
        with path.open("rb") as f:
            return f.read(6).startswith(_NUMPY_MAGICS)
    except OSError:
        return True


def read_npz_arrays(path: Path, keys: tuple[str, ...], required: tuple[str, ...],
                    expected: str) -> dict[str, np.ndarray]:
    """The arrays `keys` present in the .npz at `path`; each of `required` must be there.

    allow_pickle stays off: loading a data file must never run code from it.
    """
    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    if path.is_file() and not _starts_like_numpy(path):
        # np.load would take it for a pickle and suggest allow_pickle, which must stay off.
        raise DatasetError(f"{path}: not a numpy .npz file (neither a zip archive nor an .npy "
                           f"array; np.savez writes one); expected {expected}")
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; expected {expected}") from None
    except unreadable as err:
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
        arrays = {}
        for key in keys:
            if key not in npz.files:
                continue
            try:
                arrays[key] = npz[key]
            except unreadable as err:
                # A corrupt member, or an object array (which would need pickle).
                raise DatasetError(f"{path}: array {key!r} cannot be read ({err}); "
                                   f"expected {expected}") from None
        return arrays


def require_uint8(x: np.ndarray, key: str, path: Path) -> None:
    if x.dtype != np.uint8:
        raise DatasetError(
            f"{path}: {key} must be uint8 pixel values 0..255, got {x.dtype}; floats in [0, 1] "
            f"convert with (x * 255).round().astype(np.uint8)")


def check_labels(y: np.ndarray, key: str, path: Path, n_images: int, images_key: str) -> None:
    """Integer class labels, one per image, none negative."""
    if y.dtype.kind not in "iu":
        raise DatasetError(f"{path}: {key} must hold integer class labels, got {y.dtype}")
    if y.ndim != 1:
        raise DatasetError(f"{path}: {key} must be 1-D (N,), got shape {y.shape}")
    if len(y) != n_images:
        raise DatasetError(f"{path}: {key} has {len(y)} labels for the {n_images} images in "
                           f"{images_key}; expected one label per image")
    if len(y) and y.min() < 0:
        raise DatasetError(f"{path}: {key} must hold class labels >= 0, found {int(y.min())}")


def _images_nchw(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    require_uint8(x, key, path)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if not 1 <= x.shape[3] <= 4:
            raise DatasetError(
                f"{path}: {key} of shape {x.shape} is not N x H x W x C with channels last "
                f"(C in 1..4); for channels-first data save x.transpose(0, 2, 3, 1)")
        x = x.transpose(0, 3, 1, 2)
    else:
        raise DatasetError(f"{path}: {key} must be N x H x W or N x H x W x C, "
                           f"got {x.ndim} dimensions {x.shape}")
    if x.shape[0] == 0 or 0 in x.shape[2:]:
        raise DatasetError(f"{path}: {key} holds no images (shape {x.shape})")
    return x


def resolve_user_path(path: str | Path) -> Path:
    """A spec's file path: `~` expanded, relative paths against the current directory."""
    return Path(path).expanduser().absolute()


def load_npz_dataset(path: str | Path, train_limit: int | None = None,
                     test_limit: int | None = None) -> ImageDataset:
    """The user's .npz as an ImageDataset (see the module docstring for the layout)."""
    path = resolve_user_path(path)
    arrays = read_npz_arrays(path, ("x_train", "y_train", "x_test", "y_test"), ("x_train",),
                             NPZ_LAYOUT)
    x_train = _images_nchw(arrays["x_train"], "x_train", path)
    y_train = arrays.get("y_train")
    if y_train is not None:
        check_labels(y_train, "y_train", path, len(x_train), "x_train")

    if "x_test" in arrays:
        x_test = _images_nchw(arrays["x_test"], "x_test", path)
        if x_test.shape[1:] != x_train.shape[1:]:
            raise DatasetError(f"{path}: x_test images are {x_test.shape[1:]} (C, H, W) but "
                               f"x_train images are {x_train.shape[1:]}; expected the same shape")
        y_test = arrays.get("y_test")
        if (y_train is None) != (y_test is None):
            given, absent = ("y_train", "y_test") if y_test is None else ("y_test", "y_train")
            raise DatasetError(f"{path}: {given} is given but {absent} is not; expected labels "
                               f"for both splits or for neither")
        if y_test is not None:
            check_labels(y_test, "y_test", path, len(x_test), "x_test")
    elif "y_test" in arrays:
        raise DatasetError(f"{path}: y_test is given without x_test; expected both or neither")
    else:
        if len(x_train) < 2:
            raise DatasetError(f"{path}: x_train holds {len(x_train)} image; at least 2 are "
                               f"needed to hold out a test split (or give x_test)")
        train_idx, test_idx = seeded_split(len(x_train), NPZ_TEST_FRACTION, NPZ_SPLIT_SEED)
        x_train, x_test = x_train[train_idx], x_train[test_idx]
        if y_train is not None:
            y_train, y_test = y_train[train_idx], y_train[test_idx]
        else:
            y_test = None

    return build_dataset("npz", x_train, y_train, x_test, y_test, train_limit=train_limit,
                         test_limit=test_limit)
