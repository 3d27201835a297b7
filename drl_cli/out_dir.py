"""Checking an output folder before any work, so a run cannot fail at its end on a bad path."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CLIError


def check_output_folder(path: Path, option: str = "--out") -> None:
    """CLIError (one line naming `option`) unless `path` is a folder this process can write
    to, or can be created as one. Nothing is created here: a run that fails on bad input
    leaves no empty folder behind."""
    if path.exists() and not path.is_dir():
        raise CLIError(f"{option} {path}: is a file, expected a folder")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise CLIError(f"{option} {path}: {existing} is a file, so no folder can be created under it")
    # access() also reports a read-only filesystem (EROFS), for root too.
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "folder" if existing == path else f"parent folder {existing}"
        raise CLIError(f"{option} {path}: cannot write to the {what} (permission denied or "
                       "read-only); choose another folder")
