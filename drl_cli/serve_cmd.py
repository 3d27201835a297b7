"""`drl serve`: the embedded service with nothing but pip.

One command runs it all on this machine: the Alembic migrations on the SQLite database under
--home, a worker process (`drl worker`, Celery over the filesystem transport under --home),
and the API (uvicorn) in this process. The worker lives exactly as long as the API: Ctrl-C or
SIGTERM stops the API, then the worker; if the worker dies, the API stops too (an API
without a worker would accept jobs that never run).

Stopping the worker: SIGTERM first (Celery's warm shutdown: a short job may finish), then
SIGQUIT (cold shutdown: the running job is abandoned; it is reaped and resumed from its last
checkpoint by the next worker), then SIGKILL to the worker's whole process group, so that no
pool process outlives `drl serve`. On Linux the worker also gets SIGQUIT if `drl serve` is
killed outright (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import uvicorn

from .errors import EXIT_FAILED, CLIError

WARM_SHUTDOWN_S = 10.0   # an idle worker needs ~7 s to stop on the filesystem transport
COLD_SHUTDOWN_S = 10.0   # Celery terminating its pool
PR_SET_PDEATHSIG = 1


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the API and a worker on this machine (embedded mode)",
                       description="Migrate the database, start a worker process and serve the "
                                   "API. Everything lives under --home (SQLite, artifacts, queue).")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--home", type=Path, help="drl home folder (default: $DRL_HOME, else ~/.drl)")
    p.add_argument("--data-dir", type=Path, help="dataset folder (default: $DRL_DATA_DIR)")
    p.add_argument("--no-worker", action="store_true",
                   help="serve the API only (workers run elsewhere, on the same database and broker)")
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port {args.port}: expected 0 to 65535")
    check_address_free(args.host, args.port)

    from api.main import create_app
    from drl_core.db import upgrade_database
    from drl_core.settings import Settings

    # Through the environment, so the worker process gets the very same settings.
    if args.home:
        os.environ["DRL_HOME"] = str(args.home.expanduser().absolute())
    if args.data_dir:
        os.environ["DRL_DATA_DIR"] = str(args.data_dir.expanduser().absolute())
    settings = Settings()
    upgrade_database(settings.resolved_database_url)

    server = _AnnouncingServer(uvicorn.Config(create_app(settings), host=args.host, port=args.port,
                                              log_level="info"))
    stopping, worker_died = threading.Event(), threading.Event()
    worker: subprocess.Popen | None = None
    # SIGTERM as an exception (as Ctrl-C already is), so `finally` always stops the worker;
    # uvicorn handles both while it serves, then raises them again when it has shut down.
    previous = signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        if not args.no_worker:
            worker = start_worker()
            threading.Thread(target=_stop_server_if_worker_dies, args=(worker, server, stopping, worker_died),
                             name="worker-watch", daemon=True).start()
        server.banner = (f"drl: serving http://{args.host}:{args.port} (API docs at /docs), data in "
                         f"{settings.home}" + (f", worker pid {worker.pid}" if worker else ""))
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        stopping.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if worker is not None:
            stop_worker(worker)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
    if worker_died.is_set():
        raise CLIError(f"the worker exited with code {worker.returncode}", EXIT_FAILED)
    return 0


def check_address_free(host: str, port: int) -> None:
    """CLIError (one line) when host:port cannot be bound, before a worker is started for
    nothing (uvicorn would only say so after startup, exiting with code 3)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise CLIError(f"--host {host}: cannot resolve it ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn binds: SO_REUSEADDR, so a port in TIME_WAIT after a restart is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise CLIError(f"--port {port}: cannot listen on {host}:{port} "
                           f"({err.strerror.lower() if err.strerror else err})") from None


class _AnnouncingServer(uvicorn.Server):
    """Prints `banner` once the socket is bound, so the URL is only shown when it answers."""

    banner = ""

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started and self.banner:
            print(self.banner, flush=True)


def _raise_system_exit(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


def worker_command() -> list[str]:
    """`drl worker` with this interpreter, so it runs in the same environment."""
    return [sys.executable, "-m", "drl_cli.main", "worker"]


def _die_with_parent() -> None:
    """In the worker, before exec: receive SIGQUIT when `drl serve` dies (Linux only)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGQUIT)
    except (OSError, AttributeError):
        pass


def start_worker() -> subprocess.Popen:
    # Its own session and process group: Ctrl-C in the terminal reaches only `drl serve`,
    # which then stops the worker in order, and the group can be killed as a whole.
    return subprocess.Popen(worker_command(), start_new_session=True,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)


def stop_worker(worker: subprocess.Popen) -> int | None:
    """Stop the worker and every process of its group; returns its exit code."""
    for sig, wait_s in ((signal.SIGTERM, WARM_SHUTDOWN_S), (signal.SIGQUIT, COLD_SHUTDOWN_S)):
        if worker.poll() is not None:
            break
        try:
            worker.send_signal(sig)
            worker.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
    # Whatever is left of the group (the worker itself if it ignored both, or pool processes
    # that outlived it): killed, so nothing is orphaned.
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return worker.wait()


def _stop_server_if_worker_dies(worker: subprocess.Popen, server, stopping: threading.Event,
                                worker_died: threading.Event) -> None:
    code = worker.wait()
    if not stopping.is_set():
        worker_died.set()
        print(f"drl: the worker exited with code {code}; stopping the API", file=sys.stderr, flush=True)
        server.should_exit = True
