"""`load_dataset`: a DatasetSpec in, the whole dataset as uint8 tensors out. Nothing downloads.

`check_dataset`: the same files found and checked from their headers, without loading them:
what the API can afford on every submit (drl_core/data_paths.py). It raises the DatasetError
the load would raise for a missing file, a file of another format, a truncated file or one of
the wrong shape; what only the data shows (a label out of range, a corrupt byte inside a
compressed file) is left to the load.

`dataset_files`: the files the load reads, for a run's provenance (drl_engine/provenance.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from ..spec import DatasetSpec
from .cifar import check_cifar10, cifar10_files, load_cifar10
from .core import DatasetError, ImageDataset
from .digits import digits_file, load_digits_dataset
from .mnist import IDX_SOURCES, check_idx_dataset, idx_files, load_idx_dataset
from .npz import check_npz_file, load_npz_dataset, resolve_user_path

DATA_DIR_ENV = "DRL_DATA_DIR"
DEFAULT_DATA_DIR = "data"


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """`data_dir` if given, else $DRL_DATA_DIR, else ./data; relative to the current directory."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return resolve_user_path(chosen)


def _limits(spec: DatasetSpec) -> dict[str, int | None]:
    return {"train_limit": spec.train_limit, "test_limit": spec.test_limit}


def _npz_path(spec: DatasetSpec) -> str:
    if not spec.path:
        raise DatasetError("dataset.path: required when dataset.name is 'npz'")
    return spec.path


class Source(NamedTuple):
    """What a dataset.name needs: its load, its check, and the files the load reads."""

    load: Callable[[DatasetSpec], ImageDataset]
    check: Callable[[DatasetSpec], None]
    files: Callable[[DatasetSpec], list[Path]]


def _idx_source(name: str) -> Source:
    source = IDX_SOURCES[name]
    return Source(lambda s: load_idx_dataset(source, resolve_data_dir(s.data_dir), **_limits(s)),
                  lambda s: check_idx_dataset(source, resolve_data_dir(s.data_dir)),
                  lambda s: idx_files(source, resolve_data_dir(s.data_dir)))


# dataset.name -> its Source: one table, so that the load, the check and the provenance never
# disagree on which files a spec names.
_SOURCES: dict[str, Source] = {
    "npz": Source(lambda s: load_npz_dataset(_npz_path(s), **_limits(s)),
                  lambda s: check_npz_file(_npz_path(s)),
                  lambda s: [resolve_user_path(_npz_path(s))]),
    "digits": Source(lambda s: load_digits_dataset(**_limits(s)),
                     lambda s: None,   # bundled with scikit-learn
                     lambda s: [digits_file()]),
    "cifar10": Source(lambda s: load_cifar10(resolve_data_dir(s.data_dir), **_limits(s)),
                      lambda s: check_cifar10(resolve_data_dir(s.data_dir)),
                      lambda s: cifar10_files(resolve_data_dir(s.data_dir))),
    **{name: _idx_source(name) for name in IDX_SOURCES},
}


def _source(spec: DatasetSpec) -> Source:
    if spec.name not in _SOURCES:
        known = ", ".join(sorted(_SOURCES))
        raise DatasetError(f"dataset.name: unknown dataset {spec.name!r}; expected one of {known}")
    return _SOURCES[spec.name]


def load_dataset(spec: DatasetSpec) -> ImageDataset:
    """The dataset named by `spec`, limited to the first train_limit / test_limit images."""
    return _source(spec).load(spec)


def check_dataset(spec: DatasetSpec) -> None:
    """DatasetError (naming the file) when the files `spec` names are missing or visibly not the
    dataset (see the module docstring); reads headers, never the data."""
    _source(spec).check(spec)


def dataset_files(spec: DatasetSpec) -> list[Path]:
    """The files `load_dataset(spec)` reads (DatasetError naming one that is missing)."""
    return _source(spec).files(spec)
