"""Entry point of the `drl` console script."""

from __future__ import annotations

import argparse
import os
import sys

from . import run_cmd
from . import worker_cmd
from . import serve_cmd
from . import client_cmd
from . import token_cmd
from . import reproduce_cmd
from . import vdm_study_cmd
from . import weighting_study_cmd
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, CLIError, fail

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command killed by it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drl", description="Diffusion-based representation learning")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_cmd.add_parser(sub)
    worker_cmd.add_parser(sub)
    serve_cmd.add_parser(sub)
    client_cmd.add_parser(sub)
    token_cmd.add_parser(sub)
    reproduce_cmd.add_parser(sub)
    vdm_study_cmd.add_parser(sub)
    weighting_study_cmd.add_parser(sub)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input, reported in one line rather than as a traceback."""
    from drl_engine.datasets import DatasetError
    from drl_engine.spec import SpecError
    return CLIError, SpecError, DatasetError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as err:  # first: the client commands' errors need no engine import
        fail(str(err), err.code)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`drl status | head`): stop quietly, as other commands do.
        # stdout goes to /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as err:
        # Asked only now: user_errors() imports the engine (torch, seconds), which an exit
        # by SystemExit or Ctrl-C (drl serve stopping) must not wait for.
        if isinstance(err, user_errors()):
            fail(str(err), getattr(err, "code", EXIT_USAGE))
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
