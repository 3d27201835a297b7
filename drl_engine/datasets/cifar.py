"""CIFAR-10: the standard python batches, else the partial npz kept for offline machines.

Both store an image as one row of 3072 uint8 values: 1024 red, then 1024 green, then 1024
blue, each plane 32x32 row-major; so a row reshaped to (3, 32, 32) is already C x H x W.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np

from .arrays import build_dataset
from .core import DatasetError, ImageDataset
from .npz import check_labels, read_npz_arrays, require_uint8

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


def rows_to_images(rows: np.ndarray) -> np.ndarray:
    """(N, 3072) CIFAR rows -> (N, 3, 32, 32): the planes are already channel-major."""
    return rows.reshape(len(rows), 3, 32, 32)


def _check_rows(rows: object, key: str, path: Path, expected: str) -> np.ndarray:
    if not isinstance(rows, np.ndarray) or rows.ndim != 2 or rows.shape[1] != ROW_SIZE:
        shape = getattr(rows, "shape", type(rows).__name__)
        raise DatasetError(f"{path}: {key} must be (N, {ROW_SIZE}) uint8 rows, got {shape}; "
                           f"expected {expected}")
    require_uint8(rows, key, path)
    return rows


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
    rows = _check_rows(batch[b"data"], "b'data'", path, BATCH_LAYOUT)
    labels = np.asarray(batch[b"labels"])
    _check_cifar_labels(labels, "b'labels'", path, len(rows), "b'data'")
    return rows_to_images(rows), labels


def _load_batches(folder: Path, train_limit: int | None,
                  test_limit: int | None) -> ImageDataset:
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if not (folder / n).is_file()]
    if missing:
        raise DatasetError(f"{folder / missing[0]}: file not found; expected the CIFAR-10 python "
                           f"batches ({', '.join(TRAIN_BATCHES)}, {TEST_BATCH}) from {HOMEPAGE}")
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


def _load_partial(path: Path, train_limit: int | None, test_limit: int | None) -> ImageDataset:
    keys = ("x_train", "y_train", "x_test", "y_test")
    arrays = read_npz_arrays(path, keys, keys, f"the CIFAR-10 partial npz ({PARTIAL_LAYOUT})")
    splits = {}
    for split in ("train", "test"):
        rows = _check_rows(arrays[f"x_{split}"], f"x_{split}", path, PARTIAL_LAYOUT)
        labels = arrays[f"y_{split}"]
        _check_cifar_labels(labels, f"y_{split}", path, len(rows), f"x_{split}")
        splits[split] = rows_to_images(rows), labels
    return build_dataset("cifar10", *splits["train"], *splits["test"], train_limit=train_limit,
                         test_limit=test_limit, num_classes=NUM_CLASSES)


def load_cifar10(data_dir: Path, train_limit: int | None = None,
                 test_limit: int | None = None) -> ImageDataset:
    """CIFAR-10 as uint8 (N, 3, 32, 32): from `cifar-10-batches-py/` (in data_dir or
    data_dir/cifar10/), else from `cifar10-partial/cifar10_partial.npz` (4,000 + 1,000 images)."""
    for folder in (data_dir / BATCHES_DIR, data_dir / "cifar10" / BATCHES_DIR):
        if folder.is_dir():
            return _load_batches(folder, train_limit, test_limit)
    for path in (data_dir / PARTIAL_NPZ, data_dir / PARTIAL_NPZ.name):
        if path.is_file():
            log.info("CIFAR-10: %s not found, using the partial subset %s",
                     data_dir / BATCHES_DIR, path)
            return _load_partial(path, train_limit, test_limit)
    raise DatasetError(
        f"{data_dir / BATCHES_DIR}: not found; expected the CIFAR-10 python batches "
        f"({', '.join(TRAIN_BATCHES)}, {TEST_BATCH}) from {HOMEPAGE} (cifar-10-python.tar.gz, "
        f"extracted) in {data_dir}, or {data_dir / PARTIAL_NPZ}. Set dataset.data_dir or "
        f"DRL_DATA_DIR")
