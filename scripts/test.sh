#!/usr/bin/env bash
# The test command (README, .ci/run): installs the project, makes sure PostgreSQL and Redis
# are up, and runs the whole pytest suite against the datasets in ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
# torch first and pinned: the CPU build; any looser requirement pulls the CUDA packages.
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[test]'
bash scripts/ensure_services.sh
export DRL_DATA_DIR="${DRL_DATA_DIR:-$(cd .. && pwd)/shared/data}"
exec python3 -m pytest -q "$@"
