"""API tokens with scopes, stored only as hashes.

Scopes: ``ingest`` (send clips: the listeners' token), ``read`` (the API's GET endpoints, the
dashboard, and acknowledging alerts: the operators' token), ``admin`` (everything, plus per-machine
alert rules and the token list). A token is ``hw_`` + 32 random bytes (URL-safe base64) from
:mod:`secrets`; the store keeps its SHA-256 only. A plain hash is enough for a secret of 256
random bits (a password hash such as bcrypt or scrypt slows down guessing low-entropy passwords,
and would cost every request tens of milliseconds here), and is looked up by equality.

A request shows its token as ``Authorization: Bearer <token>`` (API clients, ``humwatch listen``) or
in the ``humwatch_token`` cookie that the dashboard's login page sets (HttpOnly, SameSite=Strict, so
other sites' pages cannot make a browser use it). No token or an unknown/revoked one: 401; a token
without the scope: 403.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from fastapi import HTTPException, Request
from sqlalchemy import select

from humwatch.errors import ConfigError
from humwatch.service.store import Store, Token, utcnow

SCOPES = ("ingest", "read", "admin")
PREFIX = "hw_"
COOKIE = "humwatch_token"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    """Who a request is: the token's name and scopes."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_scopes(text: str | list[str]) -> list[str]:
    """``"read,ingest"`` (or a list) -> checked, ordered scopes."""
    items = text if isinstance(text, list) else str(text).split(",")
    scopes = {s.strip() for s in items if s.strip()}
    bad = sorted(s for s in scopes if s not in SCOPES)
    if bad or not scopes:
        raise ConfigError(f"token scopes {text!r}: choose from {', '.join(SCOPES)} (comma separated)")
    return [s for s in SCOPES if s in scopes]


def create_token(store: Store, name: str, scopes: str | list[str]) -> str:
    """A new token named ``name`` with ``scopes``; returns the token (shown once, stored hashed)."""
    if not NAME_RE.match(name or ""):
        raise ConfigError(f"token name {name!r}: use 1-64 letters, digits, '.', '_', '-' or '@'")
    chosen = parse_scopes(scopes)
    token = PREFIX + secrets.token_urlsafe(32)
    with store.write() as s:
        if s.scalar(select(Token.id).where(Token.name == name)) is not None:
            raise ConfigError(f"a token named {name!r} exists already (revoke it first, or choose another name)")
        s.add(Token(name=name, token_hash=hash_token(token), scopes=",".join(chosen), created_at=utcnow()))
    return token


def revoke_token(store: Store, name: str) -> None:
    with store.write() as s:
        row = s.scalar(select(Token).where(Token.name == name))
        if row is None:
            raise ConfigError(f"no token named {name!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        # keep the row (its name stays taken) but free the hash so it can never match again
        row.token_hash = "revoked:" + secrets.token_hex(24)


def list_tokens(store: Store) -> list[dict]:
    with store.read() as s:
        rows = s.scalars(select(Token).order_by(Token.id)).all()
        return [
            {"name": r.name, "scopes": r.scopes.split(","), "created_at": r.created_at.isoformat(), "revoked": r.revoked_at is not None}
            for r in rows
        ]


def authenticate(store: Store, token: str | None) -> Principal | None:
    """The token's principal, or None for no token, an unknown one or a revoked one."""
    if not token or not token.startswith(PREFIX) or len(token) > 200:
        return None
    with store.read() as s:
        row = s.execute(select(Token.name, Token.scopes, Token.revoked_at).where(Token.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    return Principal(row.name, frozenset(row.scopes.split(",")))


def token_from_headers(authorization: str | None, cookie: str | None) -> str | None:
    """The token a request shows: the Bearer header first, else the dashboard's cookie."""
    if authorization:
        kind, _, value = authorization.partition(" ")
        return value.strip() if kind.lower() == "bearer" else None
    return cookie or None


def checked_sign_in(request: Request, token: str | None) -> Principal | None:
    """:func:`authenticate`, rate-limited: a client address that showed more than
    ``max_failed_logins`` unknown or revoked tokens in the last minute is answered 429 (with
    Retry-After) without its token being looked at, until the minute is over."""
    from humwatch.service.guard import client_address, too_many

    svc = request.app.state.service
    if not token:
        return None
    where = client_address(request)
    wait = svc.failed_logins.retry_after(where)
    if wait is not None:
        raise too_many("too many unknown or revoked tokens from this address", wait)
    who = authenticate(svc.store, token)
    if who is None:
        svc.failed_logins.hit(where)
    return who


def require(scope: str):
    """A FastAPI dependency: the request's :class:`Principal` when its token has ``scope``; 401
    without a valid token, 403 with one that lacks the scope. (A plain function: FastAPI runs it in
    a worker thread, off the event loop, as it queries the store.)"""

    def dependency(request: Request) -> Principal:
        token = token_from_headers(request.headers.get("authorization"), request.cookies.get(COOKIE))
        who = checked_sign_in(request, token)
        if who is None:
            raise HTTPException(
                401,
                "a valid token is needed (Authorization: Bearer <token>; `humwatch token create`)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not who.allows(scope):
            raise HTTPException(403, f"token {who.name!r} lacks the {scope!r} scope (it has: {', '.join(sorted(who.scopes))})")
        return who

    dependency.__name__ = f"require_{scope}"
    return dependency
