"""Running the server: build the gateway and the app, and hand them to uvicorn."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence

import structlog
import uvicorn

from ..gateway import Gateway
from .app import create_app


def configure_logging(json_logs: bool = True) -> None:
    """Structured logs on stderr: JSON lines for machines, or readable lines for a terminal."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


def serve(
    config: Sequence[str | os.PathLike[str]],
    *,
    host: str = "127.0.0.1",
    port: int = 8750,
    database_url: str | None = None,
    json_logs: bool = True,
    inbox: bool = True,
    announce: bool = False,
) -> None:
    configure_logging(json_logs)
    gateway = Gateway.open(config, database_url=database_url)
    app = create_app(gateway, inbox=inbox)
    # What is loaded now (policy, compiled conditions, modules) lives as long as the process:
    # keep it out of the garbage collector's later full passes (no long pauses on big policies).
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info" if announce else "warning",
        access_log=False,
        lifespan="on",
        # Long polls (`/wait?timeout=…`) would hold a shutdown for their whole timeout; an
        # agent's SDK re-polls after a dropped connection, so don't wait for them long.
        timeout_graceful_shutdown=5,
    )
