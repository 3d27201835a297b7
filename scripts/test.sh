#!/usr/bin/env bash
# The test command (README, .ci/run): installs the project, makes sure PostgreSQL and Redis
# are up, and runs the whole pytest suite against the datasets in ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
# torch first and pinned exactly: on the build machines pip resolves it to the local CPU wheel
# (pip config find-links); any looser requirement would pull the multi-GB CUDA packages.
# Elsewhere, install the torch 2.13.0 build you want (CPU or CUDA) before running this.
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[test]'
bash scripts/ensure_services.sh
export DRL_DATA_DIR="${DRL_DATA_DIR:-$(cd .. && pwd)/shared/data}"
# One torch thread per test process: two processes with torch's default of a thread per core
# would put four busy threads on two cores, and torch's threads slow down badly when they
# wait for a core (issue 14).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# Two processes, a test file each at a time (`--dist loadfile`: a module's fixtures, its
# database and its worker stay in one process): most of the suite waits on subprocesses,
# databases and brokers, so two cores finish it in about half the time. DRL_TEST_PROCESSES=0
# runs it in this process alone.
exec python3 -m pytest -q -n "${DRL_TEST_PROCESSES:-2}" --dist loadfile "$@"
