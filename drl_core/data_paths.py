"""Where a submitted spec may read data from, and whether its files are there.

On a shared box (auth on) the workers must only read datasets from the team's data folder
(`DRL_DATA_DIR`), not whatever file a spec names: `dataset.path` and `dataset.data_dir` are
resolved against that folder and must stay inside it. On a laptop (auth off) a spec reads
what its user can read, as `drl run` does.

A spec whose dataset file is missing or corrupt is refused at submit (`check_submitted_dataset`,
a 422 naming the field and the file) rather than failing its train job when its turn comes.
The API checks what a worker will read (`with_data_folder`: the spec's, else the service's
data folder) only where it sees the workers' files (`api_sees_worker_data`, docs/DEPLOY.md):
- embedded (no DRL_BROKER_URL): always; the filesystem queue puts its worker on this machine;
- with a broker (compose): when DRL_DATA_DIR is a folder here (compose mounts the datasets
  into the API as into the workers); workers elsewhere may have files the API cannot see;
- never with DRL_CHECK_DATASETS_AT_SUBMIT=false (an API whose folder is not the workers').
The check reads headers only (drl_engine.datasets.check_dataset), never the data.
"""

from __future__ import annotations

from pathlib import Path

from drl_core.settings import Settings
from drl_engine.spec import DatasetSpec, SpecError


def confine_dataset_paths(dataset: DatasetSpec, data_dir: Path | None) -> DatasetSpec:
    """`dataset` with `path` and `data_dir` made absolute inside `data_dir`; SpecError naming
    the field when one points outside it (or when no data folder is configured at all)."""
    updates = {}
    for field in ("path", "data_dir"):
        value = getattr(dataset, field)
        if value is None:
            continue
        if data_dir is None:
            raise SpecError(f"dataset.{field}: this service reads datasets only from its data "
                            "folder, and none is configured (DRL_DATA_DIR); leave the field out")
        root = Path(data_dir).resolve()
        resolved = (root / value).resolve()
        if resolved != root and root not in resolved.parents:
            raise SpecError(f"dataset.{field}: must be inside the service's data folder {root} "
                            f"(relative paths are taken from there), got {value!r}")
        updates[field] = str(resolved)
    return dataset.model_copy(update=updates) if updates else dataset


def with_data_folder(dataset: DatasetSpec, data_dir: Path | None) -> DatasetSpec:
    """`dataset` reading from the service's data folder when it names none: what a worker
    loads (worker/jobs/common.py) and what the API checks."""
    if dataset.data_dir is None and data_dir is not None:
        return dataset.model_copy(update={"data_dir": str(data_dir)})
    return dataset


def api_sees_worker_data(settings: Settings) -> bool:
    """Whether this API sees the dataset files its workers will read (the module docstring)."""
    if not settings.check_datasets_at_submit:
        return False
    if settings.broker_url is None:
        return True
    return settings.data_dir is not None and Path(settings.data_dir).is_dir()


def dataset_field(dataset: DatasetSpec) -> str:
    """The spec field that chose the files: the npz's path, the folder, else the name."""
    if dataset.name == "npz":
        return "dataset.path"
    return "dataset.data_dir" if dataset.data_dir is not None else "dataset.name"


def check_submitted_dataset(dataset: DatasetSpec, settings: Settings) -> None:
    """SpecError naming the field and the file when the dataset a worker would read is missing
    or corrupt (headers only); nothing when it looks right or the API cannot see it."""
    if not api_sees_worker_data(settings):
        return
    # Imported here: the dataset readers bring torch, which an API that never checks (or has
    # not yet been asked to) need not load.
    from drl_engine.datasets import DatasetError, check_dataset

    try:
        check_dataset(with_data_folder(dataset, settings.data_dir))
    except DatasetError as err:
        raise SpecError(f"{dataset_field(dataset)}: {err}") from None
