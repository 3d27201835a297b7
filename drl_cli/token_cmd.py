"""`drl token create NAME [--admin]`, `drl token list`, `drl token revoke NAME`: API bearer
tokens, and who is an admin (may change any experiment, not only their own).

Runs against the settings' database directly (DRL_DATABASE_URL, or the SQLite file under
--home / DRL_HOME), as an administrator on the server's machine would. Only a token's
sha256 and its first characters are stored: a created token is printed once and no listing
can show it again. A revoked token is refused (401) from the server's next request on.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CLIError
from .tables import format_table

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from drl_core.models import ApiToken


def add_parser(sub) -> None:
    p = sub.add_parser("token", help="manage API bearer tokens")
    actions = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    home = {"type": Path, "help": "drl home folder (default: $DRL_HOME, else ~/.drl)"}

    create = actions.add_parser("create", help="create a token for a user (printed once)",
                                description="Create a bearer token for user NAME (the user is "
                                            "created if needed) and print it. It is stored hashed "
                                            "and cannot be shown again.")
    create.add_argument("name", help="user name")
    create.add_argument("--label", default="cli", help="what the token is for (default: cli)")
    create.add_argument("--admin", action=argparse.BooleanOptionalAction, default=None,
                        help="make the user an admin, who may cancel, resume or delete any "
                             "experiment and add jobs to it (--no-admin: an ordinary user "
                             "again; default: as they are, a new user is not)")
    create.add_argument("--home", **home)
    create.set_defaults(func=create_token_command)

    listing = actions.add_parser("list", help="list tokens (never the tokens themselves)",
                                 description="List the active tokens: user, label, the token's "
                                             "first characters, when it was created and last used "
                                             "(to the minute), in UTC, and whether its user is "
                                             "an admin.")
    listing.add_argument("name", nargs="?", help="only this user's tokens")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    listing.add_argument("--home", **home)
    listing.set_defaults(func=list_tokens_command)

    revoke = actions.add_parser("revoke", help="revoke a user's tokens (refused at once)",
                                description="Revoke user NAME's active tokens, or only those "
                                            "with --label / --prefix. The server refuses them "
                                            "from its next request on.")
    revoke.add_argument("name", help="user name")
    revoke.add_argument("--label", help="only the tokens with this label")
    revoke.add_argument("--prefix", help="only the token whose first characters `drl token list` "
                                         "shows as this")
    revoke.add_argument("--home", **home)
    revoke.set_defaults(func=revoke_tokens_command)


@contextmanager
def token_database(home: Path | None) -> Iterator[Session]:
    """A session on the settings' database, migrated to the newest schema first (the same
    migrations `drl serve` runs: tokens may be managed before the first serve); commits when
    the block ends."""
    from drl_core.db import make_engine, session_factory, session_scope, upgrade_database
    from drl_core.settings import Settings

    if home:
        os.environ["DRL_HOME"] = str(home)
    url = Settings().resolved_database_url
    upgrade_database(url)
    engine = make_engine(url)
    try:
        with session_scope(session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def create_token_command(args: argparse.Namespace) -> int:
    from api.auth import create_token

    try:
        with token_database(args.home) as session:
            token = create_token(session, args.name, args.label, admin=args.admin)
    except ValueError as err:
        raise CLIError(str(err)) from None
    print(token)
    role = {True: " (an admin)", False: " (not an admin)", None: ""}[args.admin]
    print(f"token for {args.name!r}{role} created; it is stored hashed and will not be shown "
          "again", file=sys.stderr)
    return 0


def list_tokens_command(args: argparse.Namespace) -> int:
    from api.auth import list_tokens

    with token_database(args.home) as session:
        print(format_tokens(list_tokens(session, args.name, include_revoked=args.all), args.all))
    return 0


def revoke_tokens_command(args: argparse.Namespace) -> int:
    from api.auth import revoke_tokens

    # The listing shows a prefix as `drl_AbCdEfGh...`: copied whole, it still names the token.
    prefix = args.prefix.removesuffix("...") if args.prefix else None
    try:
        with token_database(args.home) as session:
            revoked = revoke_tokens(session, args.name, args.label, prefix)
            shown = ", ".join(f"{t.name} ({t.prefix}...)" for t in revoked)
    except LookupError as err:
        raise CLIError(f"{err.args[0]}; `drl token list` shows the active tokens") from None
    print(f"revoked {counted(len(revoked), 'token')} of {args.name!r}: {shown}")
    return 0


def counted(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "-"


def format_tokens(tokens: list[ApiToken], with_revoked: bool) -> str:
    header = ["USER", "LABEL", "PREFIX", "CREATED", "LAST USED", "ADMIN"] + (
        ["REVOKED"] if with_revoked else [])
    rows = [[t.user.name, t.name, f"{t.prefix}...", _when(t.created_at), _when(t.last_used_at),
             "yes" if t.user.is_admin else "no"]
            + ([_when(t.revoked_at)] if with_revoked else []) for t in tokens]
    kind = "token" if with_revoked else "active token"
    return format_table(header, rows) + f"\n({counted(len(tokens), kind)}; times in UTC)"
