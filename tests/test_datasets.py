"""Datasets: the real shared files (MNIST, Fashion-MNIST, CIFAR-10 partial), tiny files built
here for the other layouts, every error path, the pixel-range maps and the downloader."""

from __future__ import annotations

import functools
import gzip
import hashlib
import pickle
import shutil
import struct
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from drl_engine.datasets import (
    DatasetError,
    ImageDataset,
    check_dataset,
    download_dataset,
    from_model_range,
    load_dataset,
    to_model_range,
)
from drl_engine.datasets.digits import digits_images
from drl_engine.spec import DatasetSpec

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file: big-endian magic (2051 images / 2049 labels), the dims, the uint8 data."""
    if magic is None:
        magic = 2051 if array.ndim == 3 else 2049
    header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_tiny_idx_set(folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> dict:
    """The four MNIST files with random 28x28 images, gzipped or not; returns the arrays."""
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, a in arrays.items():
        raw = idx_bytes(a)
        (folder / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


def spec(**kw) -> DatasetSpec:
    return DatasetSpec(**kw)


def image_label_pairs(x: np.ndarray, y: np.ndarray) -> list[tuple[bytes, int]]:
    """Order-free view of a labelled image set, to check that a split partitions it."""
    return sorted(zip(map(bytes, x.reshape(len(x), -1)), np.asarray(y).tolist()))


def labelled_images(ds: ImageDataset) -> list[tuple[bytes, int]]:
    """Train and test together, as image_label_pairs."""
    return image_label_pairs(torch.cat([ds.x_train, ds.x_test]).numpy(),
                             torch.cat([ds.y_train, ds.y_test]).numpy())


# --- MNIST / Fashion-MNIST from the shared files ---------------------------------------

@pytest.mark.parametrize("name, first_labels", [
    ("mnist", [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]),
    ("fashion_mnist", [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]),
])
def test_idx_datasets_full_counts_shapes_labels(data_dir, name, first_labels):
    ds = load_dataset(spec(name=name, data_dir=str(data_dir)))
    assert ds.name == name
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == torch.uint8 and ds.x_train.is_contiguous()
    assert ds.y_train.dtype == torch.int64 and ds.y_train.shape == (60000,)
    assert ds.y_test.shape == (10000,)
    assert ds.y_train[:10].tolist() == first_labels
    # Both datasets are balanced-ish over all ten classes in both splits.
    assert torch.bincount(ds.y_train, minlength=10).min() > 5000
    assert torch.bincount(ds.y_test, minlength=10).min() > 800
    assert int(ds.y_train.max()) == 9 and int(ds.y_train.min()) == 0
    assert ds.image_shape == (1, 28, 28) and ds.num_classes == 10
    assert int(ds.x_train.max()) == 255 and int(ds.x_train.min()) == 0


def test_limits_keep_the_first_images(data_dir):
    small = load_dataset(spec(name="mnist", data_dir=str(data_dir), train_limit=100, test_limit=30))
    assert small.x_train.shape == (100, 1, 28, 28) and small.x_test.shape == (30, 1, 28, 28)
    assert small.x_train.is_contiguous() and small.num_classes == 10
    # Decoded independently: the IDX body starts after a 16-byte (images) / 8-byte header.
    raw = gzip.decompress((data_dir / "mnist" / "train-images-idx3-ubyte.gz").read_bytes())
    first = np.frombuffer(raw, np.uint8, count=100 * 784, offset=16).reshape(100, 1, 28, 28)
    assert torch.equal(small.x_train, torch.from_numpy(first.copy()))
    raw = gzip.decompress((data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert small.y_test.tolist() == list(raw[8:38])


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_directly_in_data_dir_gzipped_or_not(tmp_path, gz):
    arrays = write_tiny_idx_set(tmp_path, gz=gz)
    ds = load_dataset(spec(name="mnist", data_dir=str(tmp_path)))
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_fashion_subfolder_is_preferred_over_root_files(tmp_path):
    write_tiny_idx_set(tmp_path, n_train=7)                      # root: 7 images
    write_tiny_idx_set(tmp_path / "fashion-mnist", n_train=9)    # subfolder: 9 images
    assert len(load_dataset(spec(name="fashion_mnist", data_dir=str(tmp_path))).x_train) == 9


def test_data_dir_from_spec_then_env_then_dot_data(tmp_path, monkeypatch):
    write_tiny_idx_set(tmp_path / "env" / "mnist", n_train=3)
    write_tiny_idx_set(tmp_path / "spec" / "mnist", n_train=4)
    write_tiny_idx_set(tmp_path / "cwd" / "data" / "mnist", n_train=5)
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("DRL_DATA_DIR", raising=False)
    assert len(load_dataset(spec(name="mnist")).x_train) == 5
    monkeypatch.setenv("DRL_DATA_DIR", str(tmp_path / "env"))
    assert len(load_dataset(spec(name="mnist")).x_train) == 3
    assert len(load_dataset(spec(name="mnist", data_dir=str(tmp_path / "spec"))).x_train) == 4
    # A relative data_dir resolves against the current directory.
    assert len(load_dataset(spec(name="mnist", data_dir="data")).x_train) == 5


# --- IDX error paths ---------------------------------------------------------------------

def test_missing_idx_file_names_path_source_and_settings(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset(spec(name="mnist", data_dir=str(tmp_path)))
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'mnist' / 'train-images-idx3-ubyte.gz'}: file not found")
    assert "http://yann.lecun.com/exdb/mnist/" in msg
    assert "dataset.data_dir" in msg and "DRL_DATA_DIR" in msg


def test_bad_magic_names_file_and_expected_magic(tmp_path):
    write_tiny_idx_set(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_bytes(np.zeros(12, np.uint8), magic=1234)))
    with pytest.raises(DatasetError) as err:
        load_dataset(spec(name="mnist", data_dir=str(tmp_path)))
    assert str(err.value) == (f"{bad}: not a gzipped IDX label file "
                              f"(magic 2049 expected, got 1234)")


def test_labels_file_given_where_images_expected(tmp_path):
    write_tiny_idx_set(tmp_path, gz=False)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(idx_bytes(np.zeros(5, np.uint8)))         # magic 2049
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte: not an IDX image file "
                                           r"\(magic 2051 expected, got 2049\)"):
        load_dataset(spec(name="mnist", data_dir=str(tmp_path)))


def test_truncated_gzip_names_file(tmp_path, data_dir):
    write_tiny_idx_set(tmp_path)
    blob = (data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    cut = tmp_path / "t10k-labels-idx1-ubyte.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError) as err:
        load_dataset(spec(name="mnist", data_dir=str(tmp_path)))
    assert str(err.value).startswith(f"{cut}: truncated or corrupt gzip data")
    assert "gzipped IDX label file" in str(err.value)


def test_idx_body_shorter_than_header_says(tmp_path):
    write_tiny_idx_set(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: IDX image file of "
                                           r"12 x 28 x 28 needs 9408 data bytes"):
        load_dataset(spec(name="mnist", data_dir=str(tmp_path)))


def test_image_and_label_counts_must_match(tmp_path):
    write_tiny_idx_set(tmp_path, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.zeros(11, np.uint8)))
    with pytest.raises(DatasetError) as err:
        load_dataset(spec(name="mnist", data_dir=str(tmp_path)))
    msg = str(err.value)
    assert msg.startswith(f"{labels}: 11 labels for the 12 images in "
                          f"{tmp_path / 'train-images-idx3-ubyte'}")


def test_wrong_image_size_and_label_range(tmp_path):
    write_tiny_idx_set(tmp_path, gz=False)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((5, 32, 32), np.uint8)))
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte: MNIST images must be "
                                           r"28 x 28, got 32 x 32"):
        load_dataset(spec(name="mnist", data_dir=str(tmp_path)))
    write_tiny_idx_set(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(5, 10, np.uint8)))
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte: labels must lie in 0..9"):
        load_dataset(spec(name="mnist", data_dir=str(tmp_path)))


# --- CIFAR-10 ----------------------------------------------------------------------------

def test_cifar_partial_npz_channel_layout(data_dir):
    ds = load_dataset(spec(name="cifar10", data_dir=str(data_dir), train_limit=50))
    raw = np.load(data_dir / "cifar10-partial" / "cifar10_partial.npz")
    assert ds.x_train.shape == (50, 3, 32, 32) and ds.x_test.shape == (1000, 3, 32, 32)
    assert ds.x_train.dtype == torch.uint8 and ds.x_train.is_contiguous()
    assert ds.image_shape == (3, 32, 32) and ds.num_classes == 10
    # Row layout: 1024 R, then 1024 G, then 1024 B, each plane 32x32 row-major.
    i, h, w = 7, 5, 29
    for c in range(3):
        assert int(ds.x_train[i, c, h, w]) == int(raw["x_train"][i, c * 1024 + h * 32 + w])
    assert ds.x_train[0, 0, 0, :3].tolist() == [59, 43, 50]      # first red values of image 0
    assert ds.x_train[0, 2, 31, -3:].tolist() == [140, 84, 72]   # last blue values
    assert ds.y_train.tolist() == raw["y_train"][:50].tolist()
    assert ds.y_test.dtype == torch.int64
    assert ds.y_test[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


def write_cifar_batches(folder: Path, per_batch: int = 3, n_test: int = 2) -> dict[str, dict]:
    """A tiny cifar-10-batches-py: pickled dicts with b'data' (N, 3072) uint8, b'labels'."""
    rng = np.random.default_rng(2)
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [b"x.png"] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = batch
    return batches


def test_cifar_batches_directory(tmp_path, data_dir):
    batches = write_cifar_batches(tmp_path / "cifar-10-batches-py")
    # When both layouts are present the standard batches win over the partial npz.
    (tmp_path / "cifar10-partial").mkdir()
    (tmp_path / "cifar10-partial" / "cifar10_partial.npz").symlink_to(
        data_dir / "cifar10-partial" / "cifar10_partial.npz")
    ds = load_dataset(spec(name="cifar10", data_dir=str(tmp_path)))
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (2, 3, 32, 32)
    rows = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert ds.y_train.tolist() == labels
    assert ds.y_test.tolist() == batches["test_batch"][b"labels"]
    n, c, h, w = 11, 1, 30, 2
    assert int(ds.x_train[n, c, h, w]) == int(rows[n, c * 1024 + h * 32 + w])
    assert torch.equal(ds.x_test.reshape(2, -1), torch.from_numpy(batches["test_batch"][b"data"]))
    limited = load_dataset(spec(name="cifar10", data_dir=str(tmp_path), train_limit=4))
    assert torch.equal(limited.x_train, ds.x_train[:4])


def test_cifar_batch_errors(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder)
    (folder / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError) as err:
        load_dataset(spec(name="cifar10", data_dir=str(tmp_path)))
    assert str(err.value).startswith(f"{folder / 'data_batch_3'}: cannot be unpickled")
    assert "b'data' (N, 3072) uint8" in str(err.value)

    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((3, 3000), np.uint8),
                                                        b"labels": [0, 1, 2]}))
    with pytest.raises(DatasetError, match=r"data_batch_3: b'data' must be \(N, 3072\) uint8 rows"):
        load_dataset(spec(name="cifar10", data_dir=str(tmp_path)))

    write_cifar_batches(tmp_path / "again" / "cifar-10-batches-py")
    bad_labels = tmp_path / "again" / "cifar-10-batches-py" / "test_batch"
    bad_labels.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8),
                                         b"labels": [3, 10]}))
    with pytest.raises(DatasetError) as err:
        load_dataset(spec(name="cifar10", data_dir=str(tmp_path / "again")))
    assert str(err.value) == f"{bad_labels}: b'labels' must lie in 0..9, found 10"

    (folder / "test_batch").unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset(spec(name="cifar10", data_dir=str(tmp_path)))
    assert str(err.value).startswith(f"{folder / 'test_batch'}: file not found")


def test_cifar_nothing_found_names_both_layouts(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset(spec(name="cifar10", data_dir=str(tmp_path)))
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'cifar-10-batches-py'}: not found")
    assert str(tmp_path / "cifar10-partial" / "cifar10_partial.npz") in msg


def test_cifar_partial_npz_with_wrong_rows(tmp_path):
    path = tmp_path / "cifar10-partial" / "cifar10_partial.npz"
    path.parent.mkdir()
    np.savez(path, x_train=np.zeros((4, 3, 32, 32), np.uint8), y_train=np.zeros(4, np.int64),
             x_test=np.zeros((2, 3072), np.uint8), y_test=np.zeros(2, np.int64))
    with pytest.raises(DatasetError) as err:
        load_dataset(spec(name="cifar10", data_dir=str(tmp_path)))
    assert str(err.value).startswith(f"{path}: x_train must be (N, 3072) uint8 rows, "
                                     f"got (4, 3, 32, 32)")


# --- digits ------------------------------------------------------------------------------

def test_digits_upsampled_split_and_reproducible():
    ds = load_dataset(spec(name="digits"))
    assert ds.x_train.shape == (1438, 1, 16, 16) and ds.x_test.shape == (359, 1, 16, 16)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert ds.num_classes == 10 and set(ds.y_test.tolist()) == set(range(10))
    assert int(ds.x_train.max()) == 255 and int(ds.x_train.min()) == 0
    again = load_dataset(spec(name="digits"))
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_test, again.y_test)

    # The split partitions the 1,797 upsampled digits.
    images, labels = digits_images()
    assert labelled_images(ds) == image_label_pairs(images, labels)

    # Closed form of the 2x bilinear upsample (align_corners=False): output (0, 0) copies the
    # corner; output (1, 1) is (9 a + 3 b + 3 c + d) / 16 of the top-left 2x2 input block.
    # Then scaled by 255/16 (inputs are 0..16) and rounded.
    src = load_digits()
    x = src.images
    expected_00 = np.round(x[:, 0, 0] * 255 / 16)
    expected_11 = np.round((9 * x[:, 0, 0] + 3 * x[:, 0, 1] + 3 * x[:, 1, 0] + x[:, 1, 1])
                           / 16 * 255 / 16)
    assert np.array_equal(images[:, 0, 0, 0], expected_00.astype(np.uint8))
    assert np.array_equal(images[:, 0, 1, 1], expected_11.astype(np.uint8))
    assert np.array_equal(labels, src.target)


def test_digits_limits():
    ds = load_dataset(spec(name="digits", train_limit=20, test_limit=10))
    assert ds.x_train.shape == (20, 1, 16, 16) and ds.y_test.shape == (10,)


# --- npz ---------------------------------------------------------------------------------

def test_npz_grayscale_without_test_split_gets_seeded_10_percent(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (50, 9, 7), dtype=np.uint8)
    y = np.arange(50) % 4
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y)
    monkeypatch.chdir(tmp_path)                   # relative paths resolve against the cwd
    ds = load_dataset(spec(name="npz", path="mine.npz"))
    assert ds.name == "npz"
    assert ds.x_train.shape == (45, 1, 9, 7) and ds.x_test.shape == (5, 1, 9, 7)
    assert ds.image_shape == (1, 9, 7) and ds.num_classes == 4
    # Train and test partition the file, each image keeping its own label.
    assert labelled_images(ds) == image_label_pairs(x, y)
    again = load_dataset(spec(name="npz", path=str(tmp_path / "mine.npz")))
    assert torch.equal(again.x_test, ds.x_test)


def test_npz_channels_last_with_test_split(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (6, 8, 5, 3), dtype=np.uint8)
    xt = rng.integers(0, 256, (2, 8, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", x_train=x, y_train=np.array([0, 1, 2, 0, 1, 2], np.uint8),
             x_test=xt, y_test=np.array([2, 1]))
    ds = load_dataset(spec(name="npz", path=str(tmp_path / "rgb.npz"), test_limit=1))
    assert ds.x_train.shape == (6, 3, 8, 5) and ds.x_test.shape == (1, 3, 8, 5)
    assert ds.x_train.is_contiguous() and ds.y_train.dtype == torch.int64
    assert int(ds.x_train[4, 2, 7, 1]) == int(x[4, 7, 1, 2])       # (n, c, h, w) <- (n, h, w, c)
    assert torch.equal(ds.x_test[0], torch.from_numpy(xt[0]).permute(2, 0, 1))
    assert ds.y_test.tolist() == [2]


def test_npz_without_labels(tmp_path):
    np.savez(tmp_path / "u.npz", x_train=np.zeros((10, 4, 4), np.uint8))
    ds = load_dataset(spec(name="npz", path=str(tmp_path / "u.npz")))
    assert ds.y_train is None and ds.y_test is None and ds.num_classes is None
    assert len(ds.x_train) == 9 and len(ds.x_test) == 1


@pytest.mark.parametrize("arrays, expected", [
    ({"images": np.zeros((4, 4, 4), np.uint8)},
     "no array 'x_train' (arrays found: images); expected an .npz with x_train"),
    ({"x_train": np.zeros((4, 4, 4), np.float32)},
     "x_train must be uint8 pixel values 0..255, got float32"),
    ({"x_train": np.zeros((4, 4, 4), np.uint8), "y_train": np.zeros(3, np.int64)},
     "y_train has 3 labels for the 4 images in x_train; expected one label per image"),
    ({"x_train": np.zeros((4, 4, 4), np.uint8), "y_train": np.zeros(4, np.float32)},
     "y_train must hold integer class labels, got float32"),
    ({"x_train": np.zeros(16, np.uint8)},
     "x_train must be N x H x W or N x H x W x C, got 1 dimensions (16,)"),
    ({"x_train": np.zeros((4, 3, 8, 8), np.uint8)},
     "x_train of shape (4, 3, 8, 8) is not N x H x W x C with channels last"),
    ({"x_train": np.zeros((4, 4, 4), np.uint8), "y_test": np.zeros(2, np.int64)},
     "y_test is given without x_test"),
    ({"x_train": np.zeros((4, 4, 4), np.uint8), "y_train": np.zeros(4, np.int64),
      "x_test": np.zeros((2, 4, 4), np.uint8)},
     "y_train is given but y_test is not"),
    ({"x_train": np.zeros((4, 4, 4), np.uint8), "x_test": np.zeros((2, 5, 4), np.uint8)},
     "x_test images are (1, 5, 4) (C, H, W) but x_train images are (1, 4, 4)"),
    ({"x_train": np.zeros((4, 4, 4), np.uint8), "y_train": np.array([0, 1, -1, 2])},
     "y_train must hold class labels >= 0, found -1"),
    ({"x_train": np.array([None, "a"], dtype=object)},      # would need pickle to load
     "array 'x_train' cannot be read (Object arrays cannot be loaded when allow_pickle=False)"),
])
def test_npz_errors_name_file_and_array(tmp_path, arrays, expected):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError) as err:
        load_dataset(spec(name="npz", path=str(path)))
    assert str(err.value).startswith(f"{path}: {expected}")


def test_npz_unknown_path_and_unreadable_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError) as err:
        load_dataset(spec(name="npz", path="missing/data.npz"))
    assert str(err.value).startswith(f"{tmp_path / 'missing' / 'data.npz'}: file not found; "
                                     f"expected an .npz with x_train")
    # A name the filesystem refuses (was a bare OSError in drl run and the workers).
    with pytest.raises(DatasetError, match=r"cannot be read \(File name too long\); "
                                           r"expected an \.npz with x_train"):
        load_dataset(spec(name="npz", path="x" * 300 + ".npz"))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 this is no zip archive")
    with pytest.raises(DatasetError, match=r"junk\.npz: not a readable numpy \.npz file"):
        load_dataset(spec(name="npz", path="junk.npz"))
    np.save(tmp_path / "one.npy", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"one\.npy: a single \.npy array, not an \.npz"):
        load_dataset(spec(name="npz", path="one.npy"))
    # any other file: said plainly, not numpy's "contains pickled data ... allow_pickle" advice
    (tmp_path / "text.npz").write_text("x_train,y_train\n1,2\n")
    with pytest.raises(DatasetError, match=r"text\.npz: not a numpy \.npz file") as err:
        load_dataset(spec(name="npz", path="text.npz"))
    assert "pickle" not in str(err.value) and "expected an .npz with x_train" in str(err.value)


# --- check_dataset: the load's errors from headers alone ---------------------------------------

def test_check_passes_the_shared_files_without_reading_their_data(data_dir, monkeypatch):
    """What the API runs on every submit: headers and lengths only, never a decompression of
    the 50 MB image files or an array's data."""
    from drl_engine.datasets import idx

    def no_data(*args, **kwargs):
        raise AssertionError("check_dataset read a file's data")

    monkeypatch.setattr(idx, "_read_payload", no_data)
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", no_data)
    for name in ("mnist", "fashion_mnist", "cifar10", "digits"):
        check_dataset(spec(name=name, data_dir=str(data_dir)))


def _expect_same_error(dataset: DatasetSpec) -> str:
    """check_dataset raises exactly the DatasetError load_dataset raises; its message."""
    with pytest.raises(DatasetError) as loaded:
        load_dataset(dataset)
    with pytest.raises(DatasetError) as checked:
        check_dataset(dataset)
    assert str(checked.value) == str(loaded.value)
    return str(checked.value)


def _break_idx(folder: Path, data_dir: Path, how: str) -> None:
    gz = how in ("magic", "truncated gzip")
    write_tiny_idx_set(folder, gz=gz)
    if how == "missing":
        (folder / "t10k-labels-idx1-ubyte").unlink()
    elif how == "magic":
        (folder / "train-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(np.zeros(12, np.uint8), magic=1234)))
    elif how == "labels for images":
        (folder / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    elif how == "truncated gzip":
        blob = (data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
        (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(blob[: len(blob) // 2])
    elif how == "short body":
        path = folder / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-100])
    elif how == "counts":
        (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(11, np.uint8)))
    elif how == "image size":
        (folder / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((5, 32, 32), np.uint8)))


@pytest.mark.parametrize("how", ["missing", "magic", "labels for images", "truncated gzip",
                                 "short body", "counts", "image size"])
def test_check_finds_what_the_idx_load_finds(tmp_path, data_dir, how):
    _break_idx(tmp_path, data_dir, how)
    _expect_same_error(spec(name="mnist", data_dir=str(tmp_path)))


def test_check_accepts_a_gzip_of_several_members(tmp_path):
    """Its trailer records the last member's length only: the check reads it whole, as the load
    does, rather than refusing a file the load accepts."""
    arrays = write_tiny_idx_set(tmp_path)
    raw = idx_bytes(arrays["train-images-idx3-ubyte"])
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    check_dataset(spec(name="mnist", data_dir=str(tmp_path)))
    load_dataset(spec(name="mnist", data_dir=str(tmp_path)))


@pytest.mark.parametrize("arrays", [
    {"images": np.zeros((4, 4, 4), np.uint8)},
    {"x_train": np.zeros((4, 4, 4), np.float32)},
    {"x_train": np.zeros((4, 4, 4), np.uint8), "y_train": np.zeros(3, np.int64)},
    {"x_train": np.zeros((4, 4, 4), np.uint8), "y_train": np.zeros(4, np.float32)},
    {"x_train": np.zeros(16, np.uint8)},
    {"x_train": np.zeros((4, 3, 8, 8), np.uint8)},
    {"x_train": np.zeros((0, 4, 4), np.uint8)},
    {"x_train": np.zeros((1, 4, 4), np.uint8)},
    {"x_train": np.zeros((4, 4, 4), np.uint8), "y_test": np.zeros(2, np.int64)},
    {"x_train": np.zeros((4, 4, 4), np.uint8), "y_train": np.zeros(4, np.int64),
     "x_test": np.zeros((2, 4, 4), np.uint8)},
    {"x_train": np.zeros((4, 4, 4), np.uint8), "x_test": np.zeros((2, 5, 4), np.uint8)},
    {"x_train": np.array([None, "a"], dtype=object)},
], ids=lambda arrays: ",".join(f"{k}{v.shape}" for k, v in arrays.items()))
def test_check_finds_what_the_npz_load_finds(tmp_path, arrays):
    np.savez(tmp_path / "bad.npz", **arrays)
    _expect_same_error(spec(name="npz", path=str(tmp_path / "bad.npz")))


def test_check_finds_missing_and_foreign_npz_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 this is no zip archive")
    (tmp_path / "text.npz").write_text("x_train,y_train\n1,2\n")
    np.save(tmp_path / "one.npy", np.zeros((3, 4, 4), np.uint8))
    np.savez(tmp_path / "cut.npz", x_train=np.zeros((50, 8, 8), np.uint8))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "cut.npz").read_bytes()[:2000])
    for path in ("missing/data.npz", "junk.npz", "text.npz", "one.npy", "cut.npz"):
        assert _expect_same_error(spec(name="npz", path=path)).startswith(str(tmp_path / path))


def test_check_leaves_label_values_to_the_load(tmp_path):
    """Headers say nothing about values: a negative label passes the check, fails the load."""
    np.savez(tmp_path / "neg.npz", x_train=np.zeros((4, 4, 4), np.uint8),
             y_train=np.array([0, 1, -1, 2]))
    check_dataset(spec(name="npz", path=str(tmp_path / "neg.npz")))
    with pytest.raises(DatasetError, match="must hold class labels >= 0"):
        load_dataset(spec(name="npz", path=str(tmp_path / "neg.npz")))


def test_check_finds_what_the_cifar_load_finds(tmp_path):
    _expect_same_error(spec(name="cifar10", data_dir=str(tmp_path)))        # nothing there
    path = tmp_path / "cifar10-partial" / "cifar10_partial.npz"
    path.parent.mkdir()
    np.savez(path, x_train=np.zeros((4, 3, 32, 32), np.uint8), y_train=np.zeros(4, np.int64),
             x_test=np.zeros((2, 3072), np.uint8), y_test=np.zeros(2, np.int64))
    _expect_same_error(spec(name="cifar10", data_dir=str(tmp_path)))
    np.savez(path, x_train=np.zeros((4, 3072), np.uint8), y_train=np.zeros(4, np.int64))
    _expect_same_error(spec(name="cifar10", data_dir=str(tmp_path)))       # no x_test

    folder = tmp_path / "b" / "cifar-10-batches-py"
    write_cifar_batches(folder)
    check_dataset(spec(name="cifar10", data_dir=str(tmp_path / "b")))
    (folder / "test_batch").unlink()
    _expect_same_error(spec(name="cifar10", data_dir=str(tmp_path / "b")))


def test_check_finds_a_cifar_batch_cut_short_without_unpickling_it(tmp_path):
    """Unpickling runs code from the file, which a submit must never do: pickle's framing (every
    pickle ends with its STOP opcode) finds a batch cut short or a file of another kind."""
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder)
    batch = folder / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:-10])
    with pytest.raises(DatasetError) as err:
        check_dataset(spec(name="cifar10", data_dir=str(tmp_path)))
    assert str(err.value).startswith(f"{batch}: not a complete pickle")
    batch.write_bytes(b"")
    with pytest.raises(DatasetError, match="data_batch_2: not a complete pickle"):
        check_dataset(spec(name="cifar10", data_dir=str(tmp_path)))
    with pytest.raises(DatasetError, match="data_batch_2: cannot be unpickled"):
        load_dataset(spec(name="cifar10", data_dir=str(tmp_path)))


# --- ImageDataset and the pixel-range maps -------------------------------------------------

def test_image_dataset_to_device_and_validation():
    x = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    y = torch.tensor([0, 2, 1])
    ds = ImageDataset("t", x, y, x[:2], y[:2])
    moved = ds.to("meta")
    assert moved.x_train.device.type == "meta" and moved.y_test.device.type == "meta"
    assert moved.x_train.dtype == torch.uint8 and ds.x_train.device.type == "cpu"
    assert moved.name == "t" and ds.num_classes == 3 and ds.image_shape == (1, 4, 4)
    with pytest.raises(DatasetError, match="x_train must be a uint8 tensor"):
        ImageDataset("t", x.float(), y, x, y)
    with pytest.raises(DatasetError, match=r"y_test must be an int64 tensor of shape \(3,\)"):
        ImageDataset("t", x, y, x, y[:2])


@pytest.mark.parametrize("data_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_model_range_round_trip(data_range):
    lo, hi = data_range
    pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = to_model_range(pixels, data_range)
    assert x.dtype == torch.float32
    assert float(x.min()) == lo and float(x.max()) == hi
    assert abs(float(x.flatten()[128]) - (lo + (hi - lo) * 128 / 255)) < 1e-6
    back = from_model_range(x, data_range)
    assert torch.equal((back * 255).round().to(torch.uint8), pixels)
    # Samples overshoot the data range; the way back clamps to [0, 1].
    over = from_model_range(torch.tensor([hi + 0.5, lo - 0.5, (lo + hi) / 2]), data_range)
    assert over.tolist() == [1.0, 0.0, 0.5]


def test_model_range_rejects_float_input_and_bad_range():
    with pytest.raises(ValueError, match="expected a uint8 tensor"):
        to_model_range(torch.zeros(2), (0.0, 1.0))
    with pytest.raises(ValueError, match="hi > lo"):
        from_model_range(torch.zeros(2), (1.0, 1.0))


# --- download_dataset against a local HTTP server -------------------------------------------

class _RecordingHandler(SimpleHTTPRequestHandler):
    requested: list[str]

    def do_GET(self):
        self.requested.append(self.path)
        super().do_GET()

    def log_message(self, *args):   # keep pytest output clean
        pass


@pytest.fixture
def file_server(tmp_path, monkeypatch):
    """Serves tmp_path/'served' on 127.0.0.1; yields (folder, base_url, requested paths)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    requested: list[str] = []
    handler = type("Handler", (_RecordingHandler,), {"requested": requested})
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/", requested
    server.shutdown()
    server.server_close()
    thread.join()


def _dest_with_images(tmp_path: Path, data_dir: Path) -> Path:
    """A download target already holding the (large) valid image files, so only labels move."""
    dest = tmp_path / "dest"
    (dest / "mnist").mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (dest / "mnist" / f"{stem}.gz").symlink_to(data_dir / "mnist" / f"{stem}.gz")
    return dest


def test_download_fetches_verifies_and_skips_valid_files(tmp_path, data_dir, file_server):
    served, base_url, requested = file_server
    for stem in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(data_dir / "mnist" / f"{stem}.gz", served)
    dest = _dest_with_images(tmp_path, data_dir)
    seen = []
    paths = download_dataset("mnist", dest, base_url,
                             progress=lambda name, done, total: seen.append((name, done, total)))
    assert paths == [dest / "mnist" / f"{stem}.gz" for stem in IDX_FILES]
    assert sorted(requested) == ["/t10k-labels-idx1-ubyte.gz", "/train-labels-idx1-ubyte.gz"]
    for stem in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        got = (dest / "mnist" / f"{stem}.gz").read_bytes()
        assert got == (data_dir / "mnist" / f"{stem}.gz").read_bytes()
    size = (data_dir / "mnist" / "train-labels-idx1-ubyte.gz").stat().st_size
    assert ("train-labels-idx1-ubyte.gz", size, size) in seen
    written = sorted(p.name for p in (dest / "mnist").iterdir())
    assert written == sorted(f"{s}.gz" for s in IDX_FILES)       # no .part files left

    requested.clear()
    download_dataset("mnist", dest, base_url)          # everything present and valid
    assert requested == []
    ds = load_dataset(spec(name="mnist", data_dir=str(dest), train_limit=10, test_limit=10))
    assert ds.y_train.tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_download_rejects_corrupt_file_and_leaves_nothing(tmp_path, data_dir, file_server):
    served, base_url, _ = file_server
    blob = bytearray((data_dir / "mnist" / "train-labels-idx1-ubyte.gz").read_bytes())
    blob[100] ^= 0xFF
    (served / "train-labels-idx1-ubyte.gz").write_bytes(bytes(blob))
    dest = _dest_with_images(tmp_path, data_dir)
    with pytest.raises(DatasetError) as err:
        download_dataset("mnist", dest, base_url)
    target = dest / "mnist" / "train-labels-idx1-ubyte.gz"
    bad_md5 = hashlib.md5(bytes(blob)).hexdigest()
    assert str(err.value).startswith(
        f"{target}: the file downloaded from {base_url}train-labels-idx1-ubyte.gz is corrupt "
        f"(md5 d53e105ee54ea40749a09fcbcd1e9432 expected, got {bad_md5})")
    assert sorted(p.name for p in (dest / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"]


def test_download_missing_on_server_and_unknown_name(tmp_path, data_dir, file_server):
    _, base_url, _ = file_server
    dest = _dest_with_images(tmp_path, data_dir)
    with pytest.raises(DatasetError) as err:
        download_dataset("mnist", dest, base_url)
    assert str(err.value).startswith(f"{dest / 'mnist' / 'train-labels-idx1-ubyte.gz'}: "
                                     f"download from {base_url}train-labels-idx1-ubyte.gz failed")
    assert len(list((dest / "mnist").iterdir())) == 2
    with pytest.raises(DatasetError, match="unknown dataset 'cifar10'; expected one of mnist, "
                                           "fashion_mnist"):
        download_dataset("cifar10", dest, base_url)
