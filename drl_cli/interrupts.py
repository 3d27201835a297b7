"""Ctrl-C and SIGTERM during `drl run`: stop at a checkpoint first, at once the second time.

Python's default turns Ctrl-C into KeyboardInterrupt wherever the program happens to be, which
in a training throws away everything since the last checkpoint (up to `train.checkpoint_every`
steps). `StopRequest` turns the first SIGINT or SIGTERM into a flag that the trainer polls
before every step (`should_stop`): it then saves a checkpoint at the step it reached, and the
rerun resumes there. A second signal means "now": KeyboardInterrupt, exit 130.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOPPING_MESSAGE = ("\ndrl: stopping (training saves a checkpoint first); press Ctrl-C again to "
                    "quit at once\n")


class StopRequest:
    """A context manager that installs the handlers (and restores the previous ones), and the
    `should_stop` callable itself."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> StopRequest:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        # os.write, not print: the signal may have interrupted a write to stderr (the progress
        # bar's), and a buffered stream refuses a reentrant call.
        try:
            os.write(sys.stderr.fileno(), STOPPING_MESSAGE.encode())
        except (OSError, ValueError):   # no usable stderr: the exit message will say it
            pass
