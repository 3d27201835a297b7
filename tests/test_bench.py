"""The benchmarks must keep running: a quick smoke run that checks every figure is there."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_engine_bench_quick_prints_every_figure():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "engine.py"), "--quick", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    positive = [figures["matmul_peak_flops"], figures["train"]["images_per_s"],
                figures["train"]["achieved_flops"], figures["train"]["flops_per_step"],
                figures["encode"]["images_per_s"], figures["sample"]["network_evals_per_s"],
                figures["probes"]["all_labels"]["seconds_per_t"]]
    assert all(math.isfinite(v) and v > 0 for v in positive)
    assert 0 < figures["train"]["fraction_of_matmul_peak"] < 2


def test_api_bench_quick_against_a_real_drl_serve():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "api.py"), "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout)
    for name in ("healthz", "embeddings_json", "embeddings_npy", "post_experiments"):
        assert figures[name]["requests_per_s"] > 0 and figures[name]["p99_ms"] >= figures[name]["p50_ms"] > 0
    assert figures["embeddings_npy"]["bytes"] >= 500 * 16 * 4  # the whole page came back


def test_api_bench_burst_quick_against_postgres():
    """The burst's smoke run (30 requests at once, PostgreSQL): every one answered, none a
    server error, one experiment for the shared Idempotency-Key."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "api.py"), "--burst", "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout)
    assert figures["requests"] == 30 and figures["server_errors"] == 0
    assert figures["experiments_created_by_the_key"] == 1
    assert sum(figures["statuses"].values()) == 30 and figures["statuses"].get("201") == 1
    assert figures["all"]["p99_ms"] >= figures["all"]["p50_ms"] > 0


def test_dashboard_bench_quick_against_postgres(request):
    """The dashboard bench's smoke run (30 experiments, a run of 600 points per key, 5
    requests per page, PostgreSQL): every page timed, the seed as asked. Its real run's
    sample job finds the digits FD-LeNet classifier under $DRL_HOME/cache: kept in pytest's
    cache folder between runs (training it takes half a minute here)."""
    cache = getattr(request.config, "cache", None)
    env = os.environ | ({"DRL_HOME": str(cache.mkdir("drl-home"))} if cache else {})
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "dashboard.py"), "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout)
    assert figures["experiments"] == 30 and sum(figures["states"].values()) == 29
    points = figures["run_page_metric_points"]
    assert points["per_key"] == 600 and "loss" in points["keys"]
    assert points["rows"] >= 600 * len(points["keys"])
    for name in ("healthz", "runs_page", "runs_fragment", "run_page", "run_fragment"):
        assert figures[name]["requests"] == 5 and figures[name]["p99_ms"] >= figures[name]["p50_ms"] > 0
    assert figures["runs_page"]["x_healthz_p50"] > 0 and figures["healthz"]["x_healthz_p50"] == 1
