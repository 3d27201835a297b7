"""What kind of fault stopped a job: transient (retry it), disk full (retry it, and say so) or
a real failure (fail it).

A shared box has short outages every week: a PostgreSQL connection terminated by an admin or
a failover, the broker restarted, the S3 server down for a few seconds, a disk filled by
someone else's run. None of them says anything about the job, so a job stopped by one is
re-queued and resumes from its last checkpoint (worker/tasks.py), against a retry budget of
its own (`Settings.transient_retries`) so that a long outage still ends as a failure.

`classify` looks at the exception and every exception it was raised from (`__cause__`,
`__context__`): a disk-full OSError wrapped in torch's RuntimeError, or a connection reset
behind SQLAlchemy's OperationalError, is found where it is.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from kombu.exceptions import OperationalError as BrokerOperationalError
from sqlalchemy import exc as sa_exc

from drl_core.artifacts.base import ArtifactStoreError


class FaultKind(StrEnum):
    DATABASE = "database"
    BROKER = "broker"
    ARTIFACT_STORE = "artifact store"
    NETWORK = "network"          # a connection reset or refused that no client wrapped
    DISK_FULL = "disk full"


# errno values that mean the filesystem (or the user's quota) has no room left.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# torch writes through its own C++ writer: a short write on a full disk surfaces as these
# messages (when the file was opened by torch itself, not by Python) with no errno.
TORCH_SHORT_WRITE = ("unexpected pos", "file write failed", "PytorchStreamWriter failed writing")
# Python-level network failures (a reset or refused connection) in the store's or the
# broker's client that were not wrapped by either.
CONNECTION_ERRORS = (ConnectionError, TimeoutError)


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    detail: str     # one line: what failed, as the error said it

    def describe(self) -> str:
        """One line for the job's error and log: 'disk full: ...', 'database: ...'."""
        return f"{self.kind.value}: {self.detail}"


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from or while handling, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _disk_full(exc: BaseException) -> Fault | None:
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        where = f" writing {exc.filename}" if exc.filename else ""
        free = free_space(Path(exc.filename).parent) if exc.filename else ""
        return Fault(FaultKind.DISK_FULL, f"no space left on the device{where} "
                                          f"({exc.strerror}{'; ' + free if free else ''})")
    if isinstance(exc, ArtifactStoreError) and exc.disk_full:
        return Fault(FaultKind.DISK_FULL, f"the artifact store has no space left ({exc})")
    if isinstance(exc, RuntimeError) and any(m in str(exc) for m in TORCH_SHORT_WRITE):
        return Fault(FaultKind.DISK_FULL, "a file write came up short, which on a local disk "
                                          f"means no space left ({_one_line(exc)})")
    return None


def _transient(exc: BaseException) -> Fault | None:
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError,
                        sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return Fault(FaultKind.DATABASE, _one_line(exc))
    if isinstance(exc, BrokerOperationalError):
        return Fault(FaultKind.BROKER, _one_line(exc))
    if isinstance(exc, ArtifactStoreError) and exc.transient:
        return Fault(FaultKind.ARTIFACT_STORE, str(exc))
    return None


def classify(exc: BaseException) -> Fault | None:
    """The transient fault (or full disk) behind `exc`, or None: a real failure of the job
    (a bug, bad data, a diverged model), which retrying would only repeat.

    Disk full is looked for first and anywhere in the chain: it is what the user must act
    on, whatever wrapped it. Then the first transient fault from the outside in.
    """
    chain = list(exception_chain(exc))
    for link in chain:
        if (fault := _disk_full(link)) is not None:
            return fault
    for link in chain:
        if (fault := _transient(link)) is not None:
            return fault
    for link in chain:
        if isinstance(link, CONNECTION_ERRORS):
            return Fault(FaultKind.NETWORK, _one_line(link))
    return None


def free_space(path: Path) -> str:
    """'123.4 MiB free on /tmp' for a disk-full message; '' when it cannot be read."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return ""
    return f"{usage.free / 2**20:.1f} MiB free on {path}"
