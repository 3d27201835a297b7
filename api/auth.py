"""Bearer tokens for the team.

A token is `drl_` + 43 random URL-safe characters (256 bits), shown once when created;
the database keeps only its sha256 (hex), so a leaked database does not leak working
tokens, and a lookup is one indexed equality on the hash. SHA-256 rather than a slow
password hash is enough here because the token is random, not a guessable password.

With `settings.auth_enabled` every endpoint but /healthz and /readyz needs
`Authorization: Bearer <token>`; otherwise requests run as nobody (owner None).
Reads are open to the whole team; every write on an experiment (cancel, resume, delete,
new sample or encoding jobs) is its owner's or an admin's (`require_owner`; a user is made an
admin by `drl token create NAME --admin`), and only an admin may submit one at priority
`high` (`require_priority_allowed`). A revoked token is refused from the next request
on: every request looks its token up, nothing caches it.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, contains_eager

from api.problems import FORBIDDEN, UNAUTHORIZED, Problem
from drl_core.job_states import utc_now
from drl_core.models import ApiToken, Experiment, User
from drl_core.priority import ADMIN_ONLY, Priority

TOKEN_PREFIX = "drl_"
SHOWN_PREFIX_CHARS = 12  # stored in clear so a user can tell their tokens apart
# last_used_at is refreshed at most this often: not a database write on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, user_name: str, token_name: str,
                 admin: bool | None = None) -> str:
    """A new token for `user_name` (the user is created if needed); returns the plaintext,
    which is not stored anywhere. `admin` True or False makes the user an admin or not; None
    leaves them as they are (a new user is not). Flushes but does not commit: the caller's
    transaction."""
    user_name = user_name.strip()
    if not user_name or len(user_name) > 100:
        raise ValueError(f"user name {user_name!r}: expected 1 to 100 characters")
    if not token_name or len(token_name) > 100:
        raise ValueError(f"token name {token_name!r}: expected 1 to 100 characters")
    user = session.scalar(sa.select(User).where(User.name == user_name))
    if user is None:
        user = User(name=user_name)
        session.add(user)
    if admin is not None:
        user.is_admin = admin
    session.flush()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=token_name, token_hash=hash_token(token),
                         prefix=token[:SHOWN_PREFIX_CHARS]))
    session.flush()
    return token


def list_tokens(session: Session, user_name: str | None = None,
                include_revoked: bool = False) -> list[ApiToken]:
    """Tokens with their users, oldest first (only `user_name`'s if given). No listing can
    show a token: the database holds its hash and first characters only."""
    query = (sa.select(ApiToken).join(ApiToken.user).options(contains_eager(ApiToken.user))
             .order_by(ApiToken.created_at, ApiToken.id))
    if user_name is not None:
        query = query.where(User.name == user_name)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return list(session.scalars(query))


def revoke_tokens(session: Session, user_name: str, token_name: str | None = None,
                  prefix: str | None = None) -> list[ApiToken]:
    """Revoke `user_name`'s active tokens, only those named `token_name` and / or with the
    shown `prefix` if given; returns them. LookupError when nothing matches. Flushes but does
    not commit: the caller's transaction."""
    user = session.scalar(sa.select(User).where(User.name == user_name))
    if user is None:
        raise LookupError(f"no user {user_name!r}")
    query = sa.select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    if token_name is not None:
        query = query.where(ApiToken.name == token_name)
    if prefix is not None:
        query = query.where(ApiToken.prefix == prefix)
    tokens = list(session.scalars(query))
    if not tokens:
        which = "".join(f" {what} {value!r}" for what, value in
                        (("named", token_name), ("with prefix", prefix)) if value is not None)
        raise LookupError(f"user {user_name!r} has no active token{which}")
    now = utc_now()
    for token in tokens:
        token.revoked_at = now
    session.flush()
    return tokens


def user_for_token(session: Session, token: str) -> User | None:
    """The owner of a valid (known, not revoked) token, else None. Commits a refreshed
    `last_used_at` when the stored one is older than LAST_USED_RESOLUTION."""
    row = session.scalar(
        sa.select(ApiToken).where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    )
    if row is None:
        return None
    now = utc_now()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.commit()
    return row.user


def unauthorized(detail: str, error: str | None = None) -> Problem:
    """401 with the challenge RFC 6750 asks for (`error="invalid_token"` for a bad token)."""
    challenge = 'Bearer realm="drl"' + (f', error="{error}"' if error else "")
    return Problem(401, detail, type=UNAUTHORIZED, title="Unauthorized",
                   headers={"WWW-Authenticate": challenge})


def authenticate(session: Session, scheme: str | None, token: str | None) -> User:
    """The user behind an `Authorization` header's scheme and credentials, or a 401."""
    if not token:
        raise unauthorized("this endpoint needs a bearer token: send 'Authorization: Bearer <token>' "
                           "(create one with `drl token create NAME`)")
    if (scheme or "").lower() != "bearer":
        raise unauthorized(f"authorization scheme {scheme!r}: expected 'Bearer'", "invalid_request")
    user = user_for_token(session, token)
    if user is None:
        raise unauthorized("the bearer token is not valid (unknown or revoked)", "invalid_token")
    return user


def require_owner(user: User | None, experiment: Experiment, action: str) -> None:
    """403 unless `user` may `action` the experiment: its owner or an admin. With auth off
    (user None) anyone may; an experiment created while auth was off (no owner) any signed-in
    user may."""
    if user is None or user.is_admin or experiment.owner_id in (None, user.id):
        return
    owner = experiment.owner.name
    raise Problem(403, f"only the owner of experiment {experiment.id} ({owner}) or an admin may "
                       f"{action} it; you are {user.name}",
                  type=FORBIDDEN, title="Forbidden", experiment=experiment.id, owner=owner)


def require_priority_allowed(user: User | None, priority: Priority) -> None:
    """403 unless `user` may give an experiment `priority`: the admin-only ones (`high`)
    are an admin's; with auth off (user None) anyone's."""
    if user is None or user.is_admin or priority not in ADMIN_ONLY:
        return
    raise Problem(403, f"only an admin may submit an experiment at priority {priority}; you are "
                       f"{user.name} (low and normal are everyone's)",
                  type=FORBIDDEN, title="Forbidden", priority=priority.value)
