"""The code-usage diagnostic's results as data: rows per t, one set per checkpoint, CSV and JSON.

Torch-free (like spec.py), so the API can build the same rows from stored metric points
without importing the engine's networks; the measurement itself is `code_usage.py`.

One row per t of the grid holds three denoising errors and two differences derived from them:

    code_gain  = error_shuffled - error_true            how much the code helps at t
    class_gain = error_shuffled - error_class_shuffled  how much of that the class explains

`error_class_shuffled` (and so `class_gain`) is None for a dataset without labels. A NaN error
(a diverged model) stays NaN in memory and in the CSV, and becomes null in JSON.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spec import t_key

# The measured errors, in the order the CSV and the service store them.
ERROR_COLUMNS = ("error_true", "error_shuffled", "error_class_shuffled")
GAIN_COLUMNS = ("code_gain", "class_gain")
CSV_COLUMNS = ("step", "t", *ERROR_COLUMNS, *GAIN_COLUMNS)


def _json_number(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a non-finite value is written as null."""
    return None if value is None or not math.isfinite(value) else float(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class CodeUsageRow:
    """The denoising errors at one t (mean squared error per pixel, in the model's data range)."""

    t: float
    error_true: float
    error_shuffled: float
    error_class_shuffled: float | None = None

    @property
    def code_gain(self) -> float:
        return self.error_shuffled - self.error_true

    @property
    def class_gain(self) -> float | None:
        if self.error_class_shuffled is None:
            return None
        return self.error_shuffled - self.error_class_shuffled

    def values(self) -> dict[str, float | None]:
        """{column: value} for the error and gain columns (NaN kept)."""
        return {"error_true": self.error_true, "error_shuffled": self.error_shuffled,
                "error_class_shuffled": self.error_class_shuffled,
                "code_gain": self.code_gain, "class_gain": self.class_gain}

    def to_dict(self) -> dict[str, float | None]:
        """JSON-able: {"t", error and gain columns}; NaN becomes None."""
        return {"t": self.t, **{k: _json_number(v) for k, v in self.values().items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CodeUsageRow:
        """Inverse of `to_dict` (the gains are recomputed, not read); a null error reads as NaN,
        except error_class_shuffled, where null means "no labels"."""
        try:
            return cls(t=t_key(d["t"]),
                       error_true=math.nan if d["error_true"] is None else float(d["error_true"]),
                       error_shuffled=(math.nan if d["error_shuffled"] is None
                                       else float(d["error_shuffled"])),
                       error_class_shuffled=_optional_float(d.get("error_class_shuffled")))
        except (KeyError, TypeError, ValueError):
            raise ValueError("code usage row: expected a mapping with numbers 't', 'error_true' "
                             f"and 'error_shuffled', got {dict(d)!r}") from None


@dataclass
class CodeUsage:
    """The diagnostic at one checkpoint: `step` (optimiser steps), `images` in the held-out
    batch, one row per t (sorted by t)."""

    step: int
    rows: list[CodeUsageRow] = field(default_factory=list)
    images: int | None = None

    @property
    def t_values(self) -> list[float]:
        return [row.t for row in self.rows]

    def to_rows(self) -> list[dict[str, float | int | None]]:
        """Flat rows, the CSV's: {"step", "t", error and gain columns} (NaN kept)."""
        return [{"step": self.step, "t": row.t, **row.values()} for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: {"step", "images", "rows": [CodeUsageRow.to_dict(), ...]}."""
        return {"step": self.step, "images": self.images,
                "rows": [row.to_dict() for row in self.rows]}

    def format_table(self) -> str:
        """Fixed-width text table, one line per t; '-' where there are no labels."""
        columns = ("error_true", "error_shuffled", "code_gain", "class_gain")
        lines = [f"code usage at step {self.step} ({self.images} test images):",
                 "    t  " + "  ".join(c.rjust(14) for c in columns)]
        for row in self.rows:
            values = row.values()
            lines.append(f"{row.t:5.3f}  " + "  ".join(
                ("-" if values[c] is None else f"{values[c]:.4g}").rjust(14) for c in columns))
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CodeUsage:
        """Inverse of `to_dict`."""
        try:
            step, rows = int(d["step"]), d["rows"]
        except (KeyError, TypeError, ValueError):
            raise ValueError("code usage: expected a mapping with 'step' and 'rows'") from None
        images = d.get("images")
        return cls(step=step, rows=[CodeUsageRow.from_dict(r) for r in rows],
                   images=None if images is None else int(images))


def _csv_cell(value: float | None) -> str:
    # Every digit (repr round-trips a float exactly): a gain is the difference of two errors
    # that can agree in their first six digits (an untrained model at t = 1).
    return "" if value is None else repr(float(value))


def write_code_usage_csv(series: Sequence[CodeUsage], path: str | Path) -> None:
    """One row per (checkpoint, t), header CSV_COLUMNS; t with 3 decimals, values exactly
    (shortest round-trip form); an empty cell is "no labels"."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for usage in series:
            for row in usage.rows:
                writer.writerow([usage.step, f"{row.t:.3f}",
                                 *(_csv_cell(v) for v in row.values().values())])


def read_code_usage_csv(path: str | Path) -> list[CodeUsage]:
    """Inverse of `write_code_usage_csv` (the gain columns are recomputed from the exact errors,
    not read; the image count is not in the CSV)."""
    series: dict[int, CodeUsage] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise ValueError(f"{path}: expected the columns {','.join(CSV_COLUMNS)}, got "
                             f"{','.join(reader.fieldnames or ())}")
        for line in reader:
            step = int(line["step"])
            series.setdefault(step, CodeUsage(step)).rows.append(CodeUsageRow(
                t=t_key(line["t"]), error_true=float(line["error_true"]),
                error_shuffled=float(line["error_shuffled"]),
                error_class_shuffled=(float(line["error_class_shuffled"])
                                      if line["error_class_shuffled"] else None)))
    return list(series.values())
