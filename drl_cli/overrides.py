"""`--set section.field=value` (and `--iterations`, `--device`, `--data-dir`) overrides,
applied to a spec file's content before validation; `drl run` and `drl submit` share them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import CLIError

if TYPE_CHECKING:
    from drl_engine.spec import ExperimentSpec


def set_field(spec: dict[str, Any], key: str, value: Any, option: str = "--set") -> None:
    """Set the dotted `key` of a spec mapping to `value`, creating missing sections."""
    node = spec
    *parents, leaf = key.strip().split(".")
    for name in parents:
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise CLIError(f"{option} {key}: {name} is not a section")
        node = child
    node[leaf] = value


def apply_overrides(spec: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Set dotted keys in a spec mapping; values are parsed as YAML (`3`, `[1, 2]`, `true`)."""
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--set {item!r}: expected section.field=value, e.g. train.iterations=2000")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise CLIError(f"--set {key}: value {raw!r} is not valid YAML") from None
        set_field(spec, key, value)
    return spec


def spec_with_overrides(path: Path, assignments: list[str], *, data_dir: Path | None = None,
                        device: str | None = None, iterations: int | None = None
                        ) -> ExperimentSpec:
    """The spec file at `path` with the command line's overrides, validated.

    The file is validated alone first, so its own mistakes are reported naming it. The
    overrides go onto the file's content, not onto a dump of every default, so the result
    records as set only what the file or the command line set (`drl submit` sends just those).
    """
    from drl_engine.spec import load_spec, parse_spec, read_spec_file

    load_spec(path)
    spec = read_spec_file(path) or {}
    for key, value, option in (("dataset.data_dir", data_dir and str(data_dir), "--data-dir"),
                               ("train.device", device, "--device"),
                               ("train.iterations", iterations, "--iterations")):
        if value is not None:
            set_field(spec, key, value, option)
    return parse_spec(apply_overrides(spec, assignments))
