"""The board's Starlette app, mounted at /board: the page and its assets, the JSON reads, the live fleet
(server-sent events) and the actions (POST, CSRF-checked). Host and Origin are checked in front of it by
``server.mcp.http.HostGuard`` (``serve`` and ``http_app`` put it there)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from providers.base import ProviderError
from server.board.actions import Actions
from server.board.auth import COOKIE, CSRF_HEADER, SESSION_TTL_S, BoardAuth, Session
from server.board.hub import BoardHub
from server.board.review import check_result, review_queue
from server.board.text import for_page, one_line
from server.errors import ForgeError, InvalidInput
from server.schemas import JobId, ServerName

log = logging.getLogger("boxforge.board")
BOARD_PATH = "/board"
STATIC = resources.files("server.board") / "static"
MAX_ACTION_BYTES = 64 * 1024
MAX_DIFF_BYTES = 512 * 1024
JOB_OUTPUT_BYTES = 64 * 1024
MAX_JOB_WAIT_S = 20.0
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                 b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"cache-control": "no-store"})


def data(doc: Any) -> JSONResponse:
    return JSONResponse(doc, headers={"cache-control": "no-store"})


class Board:
    """The routes, over a hub (the live document, the fleet) and the auth."""

    def __init__(self, hub: BoardHub, auth: BoardAuth) -> None:
        self.hub = hub
        self.auth = auth
        self.actions = Actions(hub)

    def routes(self) -> list[Any]:
        return [
            Route("/", self.index), Route("/login", self.login), Route("/api/session", self.session_info),
            Route("/api/fleet", self.fleet), Route("/events", self.events), Route("/api/jobs/{job_id}", self.job),
            Route("/api/review", self.review), Route("/api/diff/{server}", self.diff),
            Route("/api/actions/{name}", self.action, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
        ]

    # auth

    def _session(self, request: Request) -> Session | None:
        return self.auth.session(request.cookies.get(COOKIE))

    def _allowed(self, request: Request) -> bool:
        return self._session(request) is not None or self.auth.bearer_ok(request.headers.get("authorization"))

    def _with_session(self, response: Response, sess: Session) -> Response:
        response.set_cookie(COOKIE, sess.id, max_age=SESSION_TTL_S, path=BOARD_PATH, httponly=True, samesite="strict")
        return response

    async def index(self, request: Request) -> Response:
        page = FileResponse(str(STATIC / "index.html"), headers={"cache-control": "no-store"})
        if self._session(request) is not None:
            return page
        if self.auth.no_auth:
            return self._with_session(page, self.auth.login(None))  # type: ignore[arg-type]
        return PlainTextResponse("boxforge board: sign in with the URL `boxforge board` printed (it holds a one-time "
                                 "token), or /board/login?token=<the MCP server's bearer token>", status_code=401)

    async def login(self, request: Request) -> Response:
        sess = self.auth.login(request.query_params.get("token"))
        if sess is None:
            return PlainTextResponse("boxforge board: that login token is wrong or was already used; run boxforge "
                                     "board again for a new URL", status_code=401)
        return self._with_session(RedirectResponse(f"{BOARD_PATH}/", status_code=303), sess)

    async def session_info(self, request: Request) -> Response:
        sess = self._session(request)
        if sess is None:
            return error(401, "no session: open the board's login URL")
        return data({"csrf": sess.csrf, "no_auth": self.auth.no_auth})

    # reads

    def _fleet_doc(self) -> dict[str, Any]:
        return {**self.hub.doc, "version": self.hub.version, "server_time": time.time()}

    async def fleet(self, request: Request) -> Response:
        if not self._allowed(request):
            return error(401, "unauthorized")
        return data(self._fleet_doc())

    async def events(self, request: Request) -> Response:
        if not self._allowed(request):
            return error(401, "unauthorized")

        async def stream() -> AsyncIterator[dict[str, str]]:
            seen = -1
            while True:
                if self.hub.version != seen:
                    seen = self.hub.version
                    yield {"event": "fleet", "data": json.dumps(self._fleet_doc())}
                await self.hub.changed_after(seen, 30.0)

        return EventSourceResponse(stream(), ping=15, headers={"cache-control": "no-store"})

    async def job(self, request: Request) -> Response:
        if not self._allowed(request):
            return error(401, "unauthorized")
        try:
            job_id = _valid(JobId, request.path_params["job_id"])
            out_at, err_at = (int(request.query_params.get(k, "0")) for k in ("stdout_offset", "stderr_offset"))
            wait_s = float(request.query_params.get("wait_s", "0"))
            if out_at < 0 or err_at < 0 or not 0 <= wait_s <= MAX_JOB_WAIT_S:
                raise ValueError
        except (ValueError, InvalidInput):
            return error(400, "a job id looks like j-0123456789ab; stdout_offset and stderr_offset are byte offsets "
                              f"(0 or more); wait_s is 0 to {MAX_JOB_WAIT_S:g} seconds")
        try:
            st = await self.hub.fleet.job_status(job_id, stdout_offset=out_at, stderr_offset=err_at, wait_s=wait_s,
                                                 max_bytes=JOB_OUTPUT_BYTES)
        except (ForgeError, ProviderError) as exc:
            return error(404 if "unknown job" in str(exc) else 400, str(exc))
        return data({"job_id": st.job_id, "server": st.server, "state": st.state, "exit_code": st.exit_code,
                     "stdout": for_page(st.stdout), "stderr": for_page(st.stderr), "stdout_offset": st.stdout_offset,
                     "stderr_offset": st.stderr_offset, "stdout_size": st.stdout_size, "stderr_size": st.stderr_size,
                     "more": st.more, "duration_s": st.duration_s, "box_reachable": st.box_reachable,
                     "hint": one_line(st.hint) if not st.box_reachable else None})

    async def review(self, request: Request) -> Response:
        if not self._allowed(request):
            return error(401, "unauthorized")
        checks = {b["name"]: check_result(b) for b in self.hub.doc["boxes"]}
        try:
            return data(await review_queue(self.hub.fleet, checks))
        except (ForgeError, ProviderError) as exc:
            return error(400, str(exc))

    async def diff(self, request: Request) -> Response:
        if not self._allowed(request):
            return error(401, "unauthorized")
        try:
            server = _valid(ServerName, request.path_params["server"])
            result = await self.hub.fleet.diff(server, max_bytes=MAX_DIFF_BYTES)
        except (ForgeError, ProviderError) as exc:
            return error(400, str(exc))
        # the diff goes to the page as data; diff2html escapes every line and name it draws
        return data({"server": result.server, "branch": one_line(result.branch), "base_commit": result.base_commit,
                     "head_commit": result.head_commit, "commits": [one_line(c) for c in result.commits],
                     "files": [{"path": one_line(f.path), "status": f.status, "added": f.added, "deleted": f.deleted}
                               for f in result.files], "stat": for_page(result.stat), "diff": result.diff,
                     "diff_bytes": result.diff_bytes, "truncated": result.truncated})

    # actions

    async def action(self, request: Request) -> Response:
        sess = self._session(request)
        if sess is None:
            return error(401, "no session: open the board's login URL")
        if not self.auth.csrf_ok(sess, request.headers.get(CSRF_HEADER)):
            return error(403, "refused: the request lacks this session's CSRF token (reload the board)")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return error(415, "send the action as application/json")
        model = Actions.MODELS.get(request.path_params["name"])
        if model is None:
            return error(404, f"no action {request.path_params['name'][:40]!r}; actions: {', '.join(Actions.MODELS)}")
        body = await request.body()
        if len(body) > MAX_ACTION_BYTES:
            return error(413, f"an action's body is at most {MAX_ACTION_BYTES // 1024} KiB")
        try:
            parsed = model.model_validate_json(body)
        except ValidationError as exc:
            return error(400, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: "
                                        f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors()))
        try:
            return data(await self.actions.run(request.path_params["name"], parsed))
        except (ForgeError, ProviderError) as exc:
            return error(400, str(exc))


def _valid(kind: Any, value: str) -> Any:
    try:
        return TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        raise InvalidInput("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None


def board_app(hub: BoardHub, auth: BoardAuth, *, lifespan: Any = None) -> ASGIApp:
    """The board at /board (and / redirecting there), with security headers on every response."""
    board = Board(hub, auth)

    async def home(_: Request) -> Response:
        return RedirectResponse(f"{BOARD_PATH}/", status_code=307)

    app = Starlette(routes=[Route("/", home), Mount(BOARD_PATH, routes=board.routes())], lifespan=lifespan)
    return SecurityHeaders(app)
