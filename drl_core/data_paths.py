"""Where a submitted spec may read data from.

On a shared box (auth on) the workers must only read datasets from the team's data folder
(`DRL_DATA_DIR`), not whatever file a spec names: `dataset.path` and `dataset.data_dir` are
resolved against that folder and must stay inside it. On a laptop (auth off) a spec reads
what its user can read, as `drl run` does.
"""

from __future__ import annotations

from pathlib import Path

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
