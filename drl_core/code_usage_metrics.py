"""The code-usage diagnostic as metric points (table metric_points): one home for their keys.

The train job records, at each checkpoint's step (and at the final step),

    code_usage/error_true/t_0.500
    code_usage/error_shuffled/t_0.500
    code_usage/error_class_shuffled/t_0.500     (datasets with labels only)

for every t of the grid: the three errors of `drl_engine.code_usage_table.CodeUsageRow`. The
gains are differences of these, derived when read (`code_usage_series`), never stored. Keys
fit the 64-character column and the characters GET /experiments/{id}/metrics?key= accepts, so
each is also a plain series over training. A non-finite error (a diverged model) is not
stored (SQLite has no NaN); it reads back as NaN, shown as null.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from drl_engine.code_usage_table import ERROR_COLUMNS, CodeUsage, CodeUsageRow
from drl_engine.spec import t_key

PREFIX = "code_usage/"
_KEY = re.compile(r"^code_usage/(?P<measure>[a-z_]+)/t_(?P<t>\d\.\d{3})$")


def code_usage_key(measure: str, t: float) -> str:
    """`code_usage/<measure>/t_<t with 3 decimals>` for one of ERROR_COLUMNS."""
    if measure not in ERROR_COLUMNS:
        raise ValueError(f"code usage measure: expected one of {', '.join(ERROR_COLUMNS)}, "
                         f"got {measure!r}")
    return f"{PREFIX}{measure}/t_{t_key(t):.3f}"


def parse_code_usage_key(key: str) -> tuple[str, float] | None:
    """(measure, t) of a code-usage key; None for any other key."""
    match = _KEY.match(key)
    if match is None or match["measure"] not in ERROR_COLUMNS:
        return None
    return match["measure"], t_key(float(match["t"]))


def code_usage_points(usage: CodeUsage) -> dict[str, float]:
    """{key: value} of one measurement's finite errors, all at step usage.step."""
    points = {}
    for row in usage.rows:
        for measure in ERROR_COLUMNS:
            value = getattr(row, measure)
            if value is not None and math.isfinite(value):
                points[code_usage_key(measure, row.t)] = float(value)
    return points


def code_usage_series(points: Iterable[tuple[str, int, float]]) -> list[CodeUsage]:
    """The measurements in (key, step, value) points, by step, rows by t; other keys are
    ignored. A missing error reads as NaN, a missing error_class_shuffled as None (no labels)."""
    by_step: dict[int, dict[float, dict[str, float]]] = {}
    for key, step, value in points:
        parsed = parse_code_usage_key(key)
        if parsed is not None:
            measure, t = parsed
            by_step.setdefault(int(step), {}).setdefault(t, {})[measure] = float(value)
    return [CodeUsage(step=step, rows=[
                CodeUsageRow(t=t, error_true=errors.get("error_true", math.nan),
                             error_shuffled=errors.get("error_shuffled", math.nan),
                             error_class_shuffled=errors.get("error_class_shuffled"))
                for t, errors in sorted(rows.items())])
            for step, rows in sorted(by_step.items())]
