"""`drl serve`: the embedded service with nothing but pip.

One command runs it all on this machine: the Alembic migrations on the SQLite database under
--home, a worker process (`drl worker`, Celery over the filesystem transport under --home),
and the API (uvicorn) in this process. The worker lives exactly as long as the API: Ctrl-C or
SIGTERM stops both; if the worker dies, the API stops too (an API without a worker would
accept jobs that never run).

Stopping (`WorkerStop`), within STOP_TIMEOUT_S of the first Ctrl-C or SIGTERM: the worker gets
SIGTERM at once, while the API shuts down: Celery's warm shutdown, in which its running job
stops at its next step, saves and uploads a checkpoint and goes back to the queue without
spending an attempt (worker/shutdown.py); the next `drl serve` resumes it at once. Whatever is
left of the worker's process group at the deadline is killed (SIGKILL), so no pool process
outlives `drl serve` (Celery itself spends seconds in fixed waits after its job is back,
~7 s here). A second Ctrl-C or SIGTERM kills the worker and exits at once; its running job, if
any, is then reaped after heartbeat_timeout_s and resumed on a new attempt. On Linux the
worker also gets SIGQUIT if `drl serve` is killed outright (PR_SET_PDEATHSIG).
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
import time
from pathlib import Path

import uvicorn

from .errors import EXIT_FAILED, EXIT_INTERRUPTED, CLIError

# From the first Ctrl-C or SIGTERM to SIGKILL of the worker's group: time for a running job to
# hand itself back (a step, a checkpoint written and stored) within the 10 s a user waits.
STOP_TIMEOUT_S = 8.0
# How long the API waits for open connections (a client's keep-alive) once it stops.
API_SHUTDOWN_S = 3
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

    server = _ServeServer(uvicorn.Config(create_app(settings), host=args.host, port=args.port,
                                         log_level="info", timeout_graceful_shutdown=API_SHUTDOWN_S))
    worker_died = threading.Event()
    worker: subprocess.Popen | None = None
    worker_stop = WorkerStop()
    server.on_first_signal, server.on_second_signal = worker_stop.request, worker_stop.kill_and_exit
    # SIGTERM as an exception (as Ctrl-C already is), so `finally` always stops the worker;
    # uvicorn handles both while it serves, then raises them again when it has shut down.
    previous = signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        if not args.no_worker:
            worker = worker_stop.worker = start_worker()
            threading.Thread(target=_stop_server_if_worker_dies,
                             args=(worker, server, worker_stop, worker_died),
                             name="worker-watch", daemon=True).start()
        server.banner = (f"drl: serving http://{args.host}:{args.port} (API docs at /docs), data in "
                         f"{settings.home}" + (f", worker pid {worker.pid}" if worker else ""))
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        # While the worker hands its job back, another Ctrl-C or SIGTERM means "now".
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: worker_stop.kill_and_exit())
        worker_stop.finish()
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


class _ServeServer(uvicorn.Server):
    """uvicorn's server that prints `banner` once the socket is bound (so the URL is only
    shown when it answers) and tells `drl serve` of a stop signal as soon as it arrives:
    `on_first_signal` while the API begins its shutdown, `on_second_signal` for another."""

    banner = ""
    on_first_signal = staticmethod(lambda: None)
    on_second_signal = staticmethod(lambda: None)

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started and self.banner:
            print(self.banner, flush=True)

    def handle_exit(self, sig: int, frame) -> None:
        if self.should_exit:
            self.on_second_signal()
        super().handle_exit(sig, frame)
        self.on_first_signal()


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


class WorkerStop:
    """Stops `worker` (once set) within STOP_TIMEOUT_S of `request`: see the module docstring."""

    def __init__(self, worker: subprocess.Popen | None = None) -> None:
        self.worker = worker
        self.deadline: float | None = None

    @property
    def requested(self) -> bool:
        return self.deadline is not None

    def request(self) -> None:
        """SIGTERM, once: Celery's warm shutdown, in which the running job is handed back."""
        if self.requested:
            return
        self.deadline = time.monotonic() + STOP_TIMEOUT_S
        if self.worker is not None and self.worker.poll() is None:
            try:
                self.worker.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def finish(self) -> int | None:
        """`request`, wait for the worker until the deadline, then SIGKILL whatever is left of
        its process group; the worker's exit code (None without a worker)."""
        self.request()
        if self.worker is None:
            return None
        try:
            self.worker.wait(max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        self._kill_group()
        return self.worker.wait()

    def kill_and_exit(self) -> None:
        """A second Ctrl-C or SIGTERM: the worker's group killed, this process gone, at once."""
        self._kill_group()
        message = ("\ndrl: stopped at once; a job that was running resumes on a new attempt "
                   "once its heartbeat is found stale\n")
        try:
            os.write(sys.stderr.fileno(), message.encode())
        except (OSError, ValueError):
            pass
        os._exit(EXIT_INTERRUPTED)

    def _kill_group(self) -> None:
        # The worker's own group (start_worker): its pool processes go with it.
        if self.worker is None:
            return
        try:
            os.killpg(self.worker.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _stop_server_if_worker_dies(worker: subprocess.Popen, server, worker_stop: WorkerStop,
                                worker_died: threading.Event) -> None:
    code = worker.wait()
    if not worker_stop.requested:
        worker_died.set()
        print(f"drl: the worker exited with code {code}; stopping the API", file=sys.stderr, flush=True)
        server.should_exit = True
