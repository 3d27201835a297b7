"""`load_dataset`: a DatasetSpec in, the whole dataset as uint8 tensors out. Nothing downloads."""

from __future__ import annotations

import os
from pathlib import Path

from ..spec import DatasetSpec
from .cifar import load_cifar10
from .core import DatasetError, ImageDataset
from .digits import load_digits_dataset
from .mnist import IDX_SOURCES, load_idx_dataset
from .npz import load_npz_dataset, resolve_user_path

DATA_DIR_ENV = "DRL_DATA_DIR"
DEFAULT_DATA_DIR = "data"


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """`data_dir` if given, else $DRL_DATA_DIR, else ./data; relative to the current directory."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return resolve_user_path(chosen)


def load_dataset(spec: DatasetSpec) -> ImageDataset:
    """The dataset named by `spec`, limited to the first train_limit / test_limit images."""
    limits = {"train_limit": spec.train_limit, "test_limit": spec.test_limit}
    if spec.name == "npz":
        if not spec.path:
            raise DatasetError("dataset.path: required when dataset.name is 'npz'")
        return load_npz_dataset(spec.path, **limits)
    if spec.name == "digits":
        return load_digits_dataset(**limits)
    data_dir = resolve_data_dir(spec.data_dir)
    if spec.name == "cifar10":
        return load_cifar10(data_dir, **limits)
    if spec.name in IDX_SOURCES:
        return load_idx_dataset(IDX_SOURCES[spec.name], data_dir, **limits)
    known = ", ".join(["cifar10", "digits", "npz", *IDX_SOURCES])
    raise DatasetError(f"dataset.name: unknown dataset {spec.name!r}; expected one of {known}")
