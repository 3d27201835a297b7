"""An experiment's priority: `low`, `normal` (the default) or `high` (admins only).

Priority orders jobs *within* an owner's turn, never across turns: the dispatcher first
picks whose turn it is (drl_core/fair_queue.py, round-robin across owners), then that
owner's job of the highest priority, then the oldest. So no priority lets one user's jobs
overtake another user's turn; `high` lets an admin put an urgent experiment ahead of
their own backlog, and breaks ties between owners whose turns are equal (two who have
never run anything on the queue). `low` is for work that may wait for everything else a
user has queued.
"""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


# Larger runs first.
RANK: dict[str, int] = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2}
# Priorities only an admin may give an experiment (users.is_admin).
ADMIN_ONLY: frozenset[Priority] = frozenset({Priority.HIGH})
