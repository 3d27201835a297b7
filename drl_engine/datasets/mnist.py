"""MNIST and Fashion-MNIST: the four standard IDX files, gzipped or not.

Looked up in `<data_dir>/<subdir>/` first, then directly in `<data_dir>/` (both layouts are
common), each name with `.gz` first, then without. `check_idx_dataset` checks the four files
from their headers alone (what a submit can afford); `load_idx_dataset` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arrays import build_dataset
from .core import DatasetError, ImageDataset
from .idx import idx_shape, read_idx_images, read_idx_labels

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILE_STEMS = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


@dataclass(frozen=True)
class IdxSource:
    """One dataset published as the four MNIST-layout IDX files."""

    name: str                    # dataset.name in the spec
    title: str                   # for messages
    subdirs: tuple[str, ...]     # the first is where download_dataset writes
    homepage: str
    default_base_url: str
    md5: dict[str, str]          # published md5 of each `<stem>.gz`
    image_size: tuple[int, int] = (28, 28)
    num_classes: int = 10


MNIST = IdxSource(
    name="mnist",
    title="MNIST",
    subdirs=("mnist",),
    homepage="http://yann.lecun.com/exdb/mnist/",
    # yann.lecun.com often refuses automated downloads; this mirror serves the same bytes.
    default_base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    md5={
        f"{TRAIN_IMAGES}.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        f"{TRAIN_LABELS}.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        f"{TEST_IMAGES}.gz": "9fb629c4189551a2d022fa330f9573f3",
        f"{TEST_LABELS}.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)

FASHION_MNIST = IdxSource(
    name="fashion_mnist",
    title="Fashion-MNIST",
    subdirs=("fashion-mnist", "fashion_mnist"),
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    default_base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    # As published in zalandoresearch/fashion-mnist's README.
    md5={
        f"{TRAIN_IMAGES}.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        f"{TRAIN_LABELS}.gz": "25c81989df183df01b3e8a0aad5dffbe",
        f"{TEST_IMAGES}.gz": "bef4ecab320f06d8554ea6380940ec79",
        f"{TEST_LABELS}.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
)

IDX_SOURCES = {s.name: s for s in (MNIST, FASHION_MNIST)}


def find_idx_file(data_dir: Path, source: IdxSource, stem: str) -> Path:
    """The first of `<data_dir>/<subdir>/<stem>[.gz]`, `<data_dir>/<stem>[.gz]` that exists."""
    folders = [data_dir / sub for sub in source.subdirs] + [data_dir]
    for folder in folders:
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                return folder / name
    expected = folders[0] / f"{stem}.gz"
    names = ", ".join(f"{s}.gz" for s in FILE_STEMS)
    raise DatasetError(
        f"{expected}: file not found; expected the {source.title} files from {source.homepage} "
        f"({names}; gzipped or not) in {folders[0]} or {data_dir}. Set dataset.data_dir or "
        f"DRL_DATA_DIR, or fetch them with "
        f"drl_engine.datasets.download_dataset('{source.name}', ...)")


def _check_split_shapes(source: IdxSource, images_path: Path, images_shape: tuple[int, ...],
                        labels_path: Path, labels_shape: tuple[int, ...]) -> None:
    """The images are the source's size, with one label each."""
    if tuple(images_shape[1:]) != source.image_size:
        raise DatasetError(f"{images_path}: {source.title} images must be "
                           f"{source.image_size[0]} x {source.image_size[1]}, "
                           f"got {images_shape[1]} x {images_shape[2]}")
    if images_shape[0] != labels_shape[0]:
        raise DatasetError(f"{labels_path}: {labels_shape[0]} labels for the {images_shape[0]} "
                           f"images in {images_path}; expected one label per image")


def _read_split(data_dir: Path, source: IdxSource, images_stem: str,
                labels_stem: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = find_idx_file(data_dir, source, images_stem)
    labels_path = find_idx_file(data_dir, source, labels_stem)
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    _check_split_shapes(source, images_path, images.shape, labels_path, labels.shape)
    if len(labels) and labels.max() >= source.num_classes:
        raise DatasetError(f"{labels_path}: labels must lie in 0..{source.num_classes - 1}, "
                           f"found {int(labels.max())}")
    return images[:, None], labels


def load_idx_dataset(source: IdxSource, data_dir: Path, train_limit: int | None = None,
                     test_limit: int | None = None) -> ImageDataset:
    """MNIST-layout dataset: uint8 (N, 1, 28, 28) images, labels 0..9."""
    x_train, y_train = _read_split(data_dir, source, TRAIN_IMAGES, TRAIN_LABELS)
    x_test, y_test = _read_split(data_dir, source, TEST_IMAGES, TEST_LABELS)
    return build_dataset(source.name, x_train, y_train, x_test, y_test, train_limit=train_limit,
                         test_limit=test_limit, num_classes=source.num_classes)


def idx_files(source: IdxSource, data_dir: Path) -> list[Path]:
    """The four files `load_idx_dataset` reads (DatasetError naming the first missing)."""
    return [find_idx_file(data_dir, source, stem) for stem in FILE_STEMS]


def check_idx_dataset(source: IdxSource, data_dir: Path) -> None:
    """The DatasetError `load_idx_dataset` would raise for a missing, foreign, truncated or
    mis-shaped file, found from the files' headers and lengths (idx_shape); what only the data
    shows (a label out of range, a corrupt byte inside a gzip) is left to the load."""
    for images_stem, labels_stem in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        images_path = find_idx_file(data_dir, source, images_stem)
        labels_path = find_idx_file(data_dir, source, labels_stem)
        _check_split_shapes(source, images_path, idx_shape(images_path, "image"),
                            labels_path, idx_shape(labels_path, "label"))
