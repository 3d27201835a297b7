"""`drl token create NAME`: a bearer token for user NAME (created if needed), printed once.

Runs against the settings' database directly (DRL_DATABASE_URL, or the SQLite file under
--home / DRL_HOME), as an administrator on the server's machine would. Only the token's
sha256 is stored: the printed token cannot be shown again.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import CLIError


def add_parser(sub) -> None:
    p = sub.add_parser("token", help="manage API bearer tokens")
    actions = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a token for a user (printed once)",
                                description="Create a bearer token for user NAME (the user is "
                                            "created if needed) and print it. It is stored hashed "
                                            "and cannot be shown again.")
    create.add_argument("name", help="user name")
    create.add_argument("--label", default="cli", help="what the token is for (default: cli)")
    create.add_argument("--home", type=Path, help="drl home folder (default: $DRL_HOME, else ~/.drl)")
    create.set_defaults(func=create_token_command)


def create_token_command(args: argparse.Namespace) -> int:
    from api.auth import create_token
    from drl_core.db import make_engine, session_factory, session_scope, upgrade_database
    from drl_core.settings import Settings

    if args.home:
        os.environ["DRL_HOME"] = str(args.home)
    settings = Settings()
    url = settings.resolved_database_url
    # The same migrations `drl serve` runs: a token may be created before the first serve.
    upgrade_database(url)
    engine = make_engine(url)
    try:
        with session_scope(session_factory(engine)) as session:
            token = create_token(session, args.name, args.label)
    except ValueError as err:
        raise CLIError(str(err)) from None
    finally:
        engine.dispose()
    print(token)
    print(f"token for {args.name!r} created; it is stored hashed and will not be shown again",
          file=sys.stderr)
    return 0
