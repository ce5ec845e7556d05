"""Channel callbacks under /hooks/<channel>: the raw request goes to the channel hub, which
verifies it before anything is parsed."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ..channels.base import CallbackRejected, RawRequest
from ..channels.hub import ChannelHub
from .errors import HTTPProblem

router = APIRouter(prefix="/hooks", include_in_schema=False)
MAX_CALLBACK_BYTES = 256 * 1024


async def _handle(name: str, request: Request) -> Response:
    hub: ChannelHub | None = getattr(request.app.state, "channels", None)
    if hub is None or name not in hub.channels:
        raise HTTPProblem(404, "unknown_channel", f"no channel {name!r} is configured")
    body = await request.body()
    if len(body) > MAX_CALLBACK_BYTES:
        raise HTTPProblem(413, "too_large", "callback body too large")
    raw = RawRequest(
        method=request.method,
        path=request.url.path,
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params),
        body=body,
        received_at=hub.gateway.clock(),
    )
    try:
        parsed = await hub.handle(name, raw)
    except CallbackRejected as exc:
        # Never echo the body of a request whose signature failed.
        return Response(
            content=f'{{"error": "rejected", "message": "{_safe(str(exc))}"}}',
            status_code=exc.status,
            media_type="application/json",
        )
    reply = parsed.reply
    return Response(
        content=reply.body,
        status_code=reply.status,
        media_type=reply.content_type,
        headers=dict(reply.headers),
    )


@router.post("/{name}/{rest:path}")
@router.post("/{name}")
async def post_hook(name: str, request: Request) -> Response:
    return await _handle(name, request)


@router.get("/{name}/{rest:path}")
@router.get("/{name}")
async def get_hook(name: str, request: Request) -> Response:
    """GET callbacks: WhatsApp's verification handshake, email confirmation pages."""
    return await _handle(name, request)


def _safe(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in '"\\')[:200]
