"""`--set section.field=value` overrides applied to a spec before validation."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import CLIError


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
        node = spec
        *parents, leaf = key.strip().split(".")
        for name in parents:
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise CLIError(f"--set {key}: {name} is not a section")
            node = child
        node[leaf] = value
    return spec
