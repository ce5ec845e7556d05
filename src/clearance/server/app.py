"""The ASGI application: API, health, metrics, and the background expiry scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import text

from .. import __version__
from ..admin_changes import AdminChanges
from ..approvals.service import ApprovalError
from ..channels.hub import ChannelHub
from ..gateway import Gateway
from ..identity import mfa
from ..store.errors import StoreUnavailable
from . import api, api_admin, api_controls, hooks
from .auth import KeyCache
from .errors import HTTPProblem
from .metrics import Metrics

log = structlog.get_logger("clearance.server")

MAX_BODY_BYTES = 1024 * 1024
SCHEDULER_MAX_SLEEP_S = 30.0
#: Risk housekeeping (`_risk_prune_loop`): first a minute after the start, then every 6 hours.
RISK_PRUNE_FIRST_S = 60.0
RISK_PRUNE_EVERY_S = 6 * 3600.0
#: Risk rows are written behind the checks (`clearance.risk.journal`): checks fold them when
#: due; this loop also folds what other processes (or a crashed one) left, while idle.
RISK_FOLD_EVERY_S = 2.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, whether announced or streamed."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _too_large(self.limit)(scope, receive, send)
                return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(self.limit)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"error": "too_large", "message": f"the request body is over {limit:,} bytes"},
        status_code=413,
    )


def create_app(
    gateway: Gateway, *, scheduler: bool = True, inbox: bool = True, channels: bool = True
) -> FastAPI:
    """The application for one gateway. `scheduler` runs expiry and channel delivery in the
    background; `channels` loads the channels the settings configure."""
    hub = ChannelHub.from_settings(gateway) if channels else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        try:  # admin changes approved while no server was running
            await app.state.admin_changes.settle()
        except Exception as exc:
            log.warning("admin_changes_settle_failed", error=str(exc))
        if scheduler:
            tasks.append(asyncio.create_task(_expiry_loop(app)))
            tasks.append(asyncio.create_task(_risk_prune_loop(app)))
            tasks.append(asyncio.create_task(_risk_fold_loop(app)))
            if hub is not None and hub.channels:
                tasks.append(asyncio.create_task(hub.dispatcher.run()))
                tasks.extend(asyncio.create_task(job) for job in hub.background())
        loop = asyncio.get_running_loop()
        with contextlib.suppress(RuntimeError, ValueError):  # also platforms without signals
            loop.add_signal_handler(
                signal.SIGHUP, lambda: asyncio.ensure_future(_reload(gateway, "SIGHUP"))
            )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(RuntimeError, ValueError):  # also platforms without signals
                loop.remove_signal_handler(signal.SIGHUP)
            if hub is not None:
                await hub.aclose()

    app = FastAPI(
        title="Clearance",
        version=__version__,
        description="An approval gateway for AI agents: policy decisions, durable human "
        "approvals and a tamper-evident audit trail.",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    # Second factors: settings from the (re)loaded policy; bad settings fail at start.
    gateway.approvals.mfa_settings = mfa.settings_provider(lambda: gateway.policy.settings)
    gateway.approvals.mfa_settings()
    app.state.admin_changes = AdminChanges(gateway)  # four eyes on policy/directory changes
    app.state.key_cache = KeyCache()
    app.state.metrics = Metrics(risk=lambda: gateway.risk)
    app.state.wake_scheduler = asyncio.Event()
    app.state.channels = hub
    gateway.approvals.on_change.append(app.state.metrics.observe_change)

    def _new_approval(result: Any) -> None:
        if result.approval is not None:
            app.state.wake_scheduler.set()

    gateway.on_check.append(_new_approval)
    app.add_middleware(BodyLimit)
    _install_errors(app)
    app.include_router(api.router)
    app.include_router(api_admin.router)
    app.include_router(hooks.router)
    app.include_router(api_controls.router)  # overrides, reviews, standing grants
    if inbox:
        from . import inbox as inbox_module

        inbox_module.install(app)

    @app.get("/livez", summary="Liveness only (no database): the process answers")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/healthz", summary="Liveness and database reachability")
    async def healthz() -> JSONResponse:
        try:
            async with gateway.db.aconnect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return JSONResponse(
                {"status": "unavailable", "reason": f"database unreachable: {type(exc).__name__}"},
                status_code=503,
            )
        return JSONResponse({"status": "ok", "policy_version": gateway.engine.version})

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        with contextlib.suppress(Exception):
            app.state.metrics.set_counts(await gateway.approvals.counts())
        return Response(app.state.metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(HTTPProblem)
    async def _problem(_: Request, exc: HTTPProblem) -> JSONResponse:
        return JSONResponse({"error": exc.code, "message": exc.message}, status_code=exc.status)

    @app.exception_handler(ApprovalError)
    async def _approval(_: Request, exc: ApprovalError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "message": exc.message}, status_code=exc.status)

    @app.exception_handler(StoreUnavailable)
    async def _store(_: Request, exc: StoreUnavailable) -> JSONResponse:
        log.error("store_unavailable", error=str(exc))
        return JSONResponse(
            {
                "error": "store_unavailable",
                "message": "the database is unavailable, so nothing was allowed or recorded; "
                "retry later",
            },
            status_code=503,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:20]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse(
            {"error": "invalid_request", "message": "; ".join(problems) or "invalid request"},
            status_code=422,
        )


async def _reload(gateway: Gateway, by: str) -> None:
    ok, detail = await gateway.reload(by=by)
    if ok:
        log.info("policy_reloaded", policy_version=detail, by=by)
    else:
        log.error("policy_reload_rejected", problems=detail, by=by)


async def _risk_prune_loop(app: FastAPI) -> None:
    """Delete expired risk rows `RISK_PRUNE_FIRST_S` after the start, then every
    `RISK_PRUNE_EVERY_S` (nothing when the policy, even after a reload, has no risk section).
    Several servers on one database may prune at once: each deletes only expired rows."""
    gateway: Gateway = app.state.gateway
    await asyncio.sleep(RISK_PRUNE_FIRST_S)
    while True:
        try:
            pruned = await gateway.prune_risk()
            if pruned is not None:
                app.state.metrics.risk_pruned.inc(pruned)
                log.info("risk_pruned", rows=pruned)
        except Exception as exc:  # the database may be down for a while: try next time
            log.warning("risk_prune_failed", error=str(exc))
        await asyncio.sleep(RISK_PRUNE_EVERY_S)


async def _risk_fold_loop(app: FastAPI) -> None:
    """Fill the risk row cache from the store (a restart does not start cold), then fold the
    checks not yet counted into the risk rows every `RISK_FOLD_EVERY_S`: this server's, when
    no check came to do it, and other processes' (a crashed one's included)."""
    gateway: Gateway = app.state.gateway
    try:
        warmed = await gateway.warm_risk()
        if warmed is not None:
            log.info("risk_cache_warmed", rows=warmed)
    except Exception as exc:  # only a cold cache: reads fill it
        log.warning("risk_cache_warm_failed", error=str(exc))
    while True:
        await asyncio.sleep(RISK_FOLD_EVERY_S)
        try:
            await gateway.fold_risk()
        except Exception as exc:  # the database may be down for a while: try next time
            log.warning("risk_fold_failed", error=str(exc))


async def _expiry_loop(app: FastAPI) -> None:
    """Expire pending approvals at their deadline, and fire their reminders and escalations
    (durable timers, each claimed by one server). Sleeps until the next one is due (at most
    `SCHEDULER_MAX_SLEEP_S`), and wakes early when a new approval is created."""
    gateway: Gateway = app.state.gateway
    wake: asyncio.Event = app.state.wake_scheduler
    worker = f"{os.getpid()}-{secrets.token_hex(3)}"
    while True:
        try:
            await gateway.approvals.expire_due()
            await gateway.approvals.fire_due(worker)
            times = [await gateway.approvals.next_expiry(), await gateway.approvals.next_timer()]
            upcoming = min((t for t in times if t is not None), default=None)
        except Exception as exc:  # the database may be down for a while: keep trying
            log.warning("expiry_scheduler_error", error=str(exc))
            upcoming = None
        delay = SCHEDULER_MAX_SLEEP_S
        if upcoming is not None:
            delay = min(delay, max(0.0, (upcoming - gateway.clock()).total_seconds()) + 0.01)
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), delay)
