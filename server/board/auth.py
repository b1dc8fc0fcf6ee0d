"""Who may use the board: a login token exchanged for a session cookie, and a CSRF token per session.

- ``boxforge board`` prints a URL holding a one-time token; opening it sets an HttpOnly, SameSite=Strict
  session cookie (path /board) and the token is spent. On ``boxforge mcp --http`` the login token is the
  server's bearer token (not spent), and an ``Authorization: Bearer`` header is accepted on reads too.
- ``--no-auth`` (refused off loopback) lets every page in without a token; it still gets a session, for CSRF.
- Every POST needs the session's CSRF token in the ``X-Boxforge-CSRF`` header: a page of another origin can
  neither read it (no CORS) nor send that header without a preflight we never answer.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

COOKIE = "boxforge_board"
CSRF_HEADER = "x-boxforge-csrf"
SESSION_TTL_S = 7 * 24 * 3600
MAX_SESSIONS = 256


@dataclass
class Session:
    id: str
    csrf: str
    created_at: float = field(default_factory=time.time)


class BoardAuth:
    """``token``: what a login must present (None with ``no_auth``); ``one_time``: spent by the first login."""

    def __init__(self, token: str | None, *, one_time: bool, bearer: str | None = None) -> None:
        self.no_auth = token is None and bearer is None
        self._token = token
        self._one_time = one_time
        self._bearer = bearer.encode() if bearer else None
        self._sessions: dict[str, Session] = {}

    def login(self, given: str | None) -> Session | None:
        """A new session for a valid token (spending a one-time token), else None."""
        if self.no_auth:
            return self._new()
        if given is None or self._token is None or not hmac.compare_digest(given.encode(), self._token.encode()):
            return None
        if self._one_time:
            self._token = None
        return self._new()

    def _new(self) -> Session:
        now = time.time()
        for sid in [s for s, sess in self._sessions.items() if now - sess.created_at > SESSION_TTL_S]:
            del self._sessions[sid]
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[min(self._sessions, key=lambda s: self._sessions[s].created_at)]
        sess = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        self._sessions[sess.id] = sess
        return sess

    def session(self, cookie: str | None) -> Session | None:
        sess = self._sessions.get(cookie or "")
        if sess is None or time.time() - sess.created_at > SESSION_TTL_S:
            return None
        return sess

    def bearer_ok(self, header: str | None) -> bool:
        if self._bearer is None or not header:
            return False
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._bearer)

    @staticmethod
    def csrf_ok(sess: Session | None, given: str | None) -> bool:
        return sess is not None and given is not None and hmac.compare_digest(given.encode(), sess.csrf.encode())
