"""Shared fixtures. Datasets come from ../shared/data (or $DRL_DATA_DIR); nothing downloads."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DRL_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.fail(f"datasets not found at {SHARED_DATA}; set DRL_DATA_DIR to the shared data folder")
    return SHARED_DATA

# Real-database fixtures (PostgreSQL per module, SQLite per test) live in tests/db_fixtures.py.
pytest_plugins = ["db_fixtures"]
