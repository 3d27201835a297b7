"""Shared fixtures. Datasets come from ../shared/data (or $DRL_DATA_DIR); nothing downloads."""

import os
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Runs cache FD-LeNet classifiers under $DRL_HOME/cache: never in the user's ~/.drl. Tests that
# need their own home set DRL_HOME themselves (monkeypatch, subprocess env).
os.environ.setdefault("DRL_HOME", tempfile.mkdtemp(prefix="drl-test-home-"))
SHARED_DATA = Path(os.environ.get("DRL_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.fail(f"datasets not found at {SHARED_DATA}; set DRL_DATA_DIR to the shared data folder")
    return SHARED_DATA

# Real-database fixtures (PostgreSQL per module, SQLite per test) live in tests/db_fixtures.py.
pytest_plugins = ["db_fixtures"]
