"""CIFAR-10: the standard python batches, else the partial npz kept for offline machines.

Both store an image as one row of 3072 uint8 values: 1024 red, then 1024 green, then 1024
blue, each plane 32x32 row-major; so a row reshaped to (3, 32, 32) is already C x H x W.

`check_cifar10` checks the files without loading them (what a submit can afford): the partial
npz from its .npy headers, the batches by their presence and pickle's framing only, since
unpickling a file runs code from it.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np

from .arrays import build_dataset
from .core import DatasetError, ImageDataset
from .npz import (ArrayLike, check_label_shape, check_labels, read_npz_arrays, read_npz_headers,
                  require_uint8)

log = logging.getLogger(__name__)

BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
PARTIAL_NPZ = Path("cifar10-partial") / "cifar10_partial.npz"
ROW_SIZE = 3 * 32 * 32
NUM_CLASSES = 10
HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
BATCH_LAYOUT = "a CIFAR-10 python batch: a pickled dict with b'data' (N, 3072) uint8 and b'labels'"
PARTIAL_LAYOUT = "x_train (N, 3072) uint8, y_train, x_test (M, 3072) uint8, y_test"
PARTIAL_KEYS = ("x_train", "y_train", "x_test", "y_test")
# Every pickle ends with the STOP opcode: a batch that does not was cut short (or is not one).
PICKLE_STOP = b"."


def rows_to_images(rows: np.ndarray) -> np.ndarray:
    """(N, 3072) CIFAR rows -> (N, 3, 32, 32): the planes are already channel-major."""
    return rows.reshape(len(rows), 3, 32, 32)


def _check_rows(rows: object, key: str, path: Path, expected: str) -> None:
    """(N, 3072) uint8: an array, or an .npy header (anything else: what a pickle held)."""
    shape = getattr(rows, "shape", None)
    if shape is None or len(shape) != 2 or shape[1] != ROW_SIZE:
        raise DatasetError(f"{path}: {key} must be (N, {ROW_SIZE}) uint8 rows, "
                           f"got {shape if shape is not None else type(rows).__name__}; "
                           f"expected {expected}")
    require_uint8(rows, key, path)


def _check_cifar_labels(labels: np.ndarray, key: str, path: Path, n_images: int,
                        images_key: str) -> None:
    check_labels(labels, key, path, n_images, images_key)
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise DatasetError(f"{path}: {key} must lie in 0..{NUM_CLASSES - 1}, "
                           f"found {int(labels.max())}")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,)) from one pickled CIFAR-10 batch.

    The format is a pickle, which can run code when loaded: read batches only from a
    directory you trust, as every CIFAR reader does.
    """
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; expected {BATCH_LAYOUT}") from None
    except Exception as err:  # unpickling garbage can raise nearly anything
        raise DatasetError(f"{path}: cannot be unpickled ({type(err).__name__}: {err}); "
                           f"expected {BATCH_LAYOUT}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DatasetError(f"{path}: got {keys}; expected {BATCH_LAYOUT}")
    rows = batch[b"data"]
    _check_rows(rows, "b'data'", path, BATCH_LAYOUT)
    labels = np.asarray(batch[b"labels"])
    _check_cifar_labels(labels, "b'labels'", path, len(rows), "b'data'")
    return rows_to_images(rows), labels


def _batch_paths(folder: Path) -> list[Path]:
    """The six batch files; DatasetError naming the first that is missing."""
    paths = [folder / name for name in (*TRAIN_BATCHES, TEST_BATCH)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{missing[0]}: file not found; expected the CIFAR-10 python "
                           f"batches ({', '.join(TRAIN_BATCHES)}, {TEST_BATCH}) from {HOMEPAGE}")
    return paths


def _check_batch_framing(path: Path) -> None:
    """A non-empty file ending as every pickle does; its content is left to `read_batch`."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - 1, 0))
            last = f.read(1)
    except OSError as err:
        raise DatasetError(f"{path}: cannot be read ({err.strerror}); expected {BATCH_LAYOUT}") from None
    if last != PICKLE_STOP:
        raise DatasetError(f"{path}: not a complete pickle ({size} bytes, not ending with "
                           f"pickle's STOP opcode: cut short, or another file); "
                           f"expected {BATCH_LAYOUT}")


def _load_batches(folder: Path, train_limit: int | None,
                  test_limit: int | None) -> ImageDataset:
    _batch_paths(folder)
    xs, ys = [], []
    for name in TRAIN_BATCHES:
        # A limited run stops reading once it has enough images (each batch is 10,000).
        if train_limit is not None and sum(map(len, ys)) >= train_limit:
            break
        x, y = read_batch(folder / name)
        xs.append(x)
        ys.append(y)
    x_test, y_test = read_batch(folder / TEST_BATCH)
    return build_dataset("cifar10", np.concatenate(xs), np.concatenate(ys), x_test, y_test,
                         train_limit=train_limit, test_limit=test_limit, num_classes=NUM_CLASSES)


PARTIAL_EXPECTED = f"the CIFAR-10 partial npz ({PARTIAL_LAYOUT})"


def _check_partial_layout(arrays: dict[str, ArrayLike], path: Path) -> None:
    for split in ("train", "test"):
        rows = arrays[f"x_{split}"]
        _check_rows(rows, f"x_{split}", path, PARTIAL_LAYOUT)
        check_label_shape(arrays[f"y_{split}"], f"y_{split}", path, rows.shape[0], f"x_{split}")


def _load_partial(path: Path, train_limit: int | None, test_limit: int | None) -> ImageDataset:
    arrays = read_npz_arrays(path, PARTIAL_KEYS, PARTIAL_KEYS, PARTIAL_EXPECTED)
    _check_partial_layout(arrays, path)
    splits = {}
    for split in ("train", "test"):
        rows, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        _check_cifar_labels(labels, f"y_{split}", path, len(rows), f"x_{split}")
        splits[split] = rows_to_images(rows), labels
    return build_dataset("cifar10", *splits["train"], *splits["test"], train_limit=train_limit,
                         test_limit=test_limit, num_classes=NUM_CLASSES)


def find_cifar10(data_dir: Path) -> tuple[str, Path]:
    """("batches", folder) for `cifar-10-batches-py/` (in data_dir or data_dir/cifar10/), else
    ("partial", file) for `cifar10-partial/cifar10_partial.npz`; DatasetError naming both."""
    for folder in (data_dir / BATCHES_DIR, data_dir / "cifar10" / BATCHES_DIR):
        if folder.is_dir():
            return "batches", folder
    for path in (data_dir / PARTIAL_NPZ, data_dir / PARTIAL_NPZ.name):
        if path.is_file():
            return "partial", path
    raise DatasetError(
        f"{data_dir / BATCHES_DIR}: not found; expected the CIFAR-10 python batches "
        f"({', '.join(TRAIN_BATCHES)}, {TEST_BATCH}) from {HOMEPAGE} (cifar-10-python.tar.gz, "
        f"extracted) in {data_dir}, or {data_dir / PARTIAL_NPZ}. Set dataset.data_dir or "
        f"DRL_DATA_DIR")


def load_cifar10(data_dir: Path, train_limit: int | None = None,
                 test_limit: int | None = None) -> ImageDataset:
    """CIFAR-10 as uint8 (N, 3, 32, 32): from `cifar-10-batches-py/` (in data_dir or
    data_dir/cifar10/), else from `cifar10-partial/cifar10_partial.npz` (4,000 + 1,000 images)."""
    layout, path = find_cifar10(data_dir)
    if layout == "batches":
        return _load_batches(path, train_limit, test_limit)
    log.info("CIFAR-10: %s not found, using the partial subset %s", data_dir / BATCHES_DIR, path)
    return _load_partial(path, train_limit, test_limit)


def cifar10_files(data_dir: Path) -> list[Path]:
    """The files `load_cifar10` reads from: the six batches (all of them, though a limited run
    may stop before the last), or the partial npz."""
    layout, path = find_cifar10(data_dir)
    return _batch_paths(path) if layout == "batches" else [path]


def check_cifar10(data_dir: Path) -> None:
    """The DatasetError `load_cifar10` would raise for missing files, a mis-shaped partial npz
    (its headers) or a batch cut short (pickle's framing), without loading any of them."""
    layout, path = find_cifar10(data_dir)
    if layout == "batches":
        for batch in _batch_paths(path):
            _check_batch_framing(batch)
    else:
        _check_partial_layout(read_npz_headers(path, PARTIAL_KEYS, PARTIAL_KEYS, PARTIAL_EXPECTED),
                              path)
