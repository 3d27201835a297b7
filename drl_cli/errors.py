"""User-facing failures: one line on stderr and a non-zero exit code, never a traceback."""

from __future__ import annotations

import sys

EXIT_USAGE = 2      # bad spec, bad file, bad argument
EXIT_FAILED = 1     # the job itself failed
EXIT_INTERRUPTED = 130   # 128 + SIGINT: stopped by Ctrl-C (or SIGTERM), as a shell reports it


class CLIError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = EXIT_USAGE) -> None:
    print(f"drl: error: {message}", file=sys.stderr)
    raise SystemExit(code)
