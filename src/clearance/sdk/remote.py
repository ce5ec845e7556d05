"""The remote gate: the same interface over HTTP. Imports httpx and nothing of the server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from .base import BaseGate
from .errors import GatewayError, GatewayUnavailable

RETRY_FOR_S = 30.0


class RemoteGate(BaseGate):
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry_for: float = RETRY_FOR_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__()
        if not api_key:
            raise ValueError("an API key is required: create one with `clearance keys create`")
        self.url = url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._retry_for = retry_for
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.url,
                headers={"authorization": f"Bearer {self._api_key}"},
                timeout=self._timeout,
                transport=self._transport,
            )
        return self._client

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        read_timeout: float | None = None,
        retry: bool = False,
    ) -> dict[str, Any]:
        """One request. With `retry`, connection failures and 5xx are retried with backoff for
        `retry_for` seconds (safe only for idempotent calls: reads, waits, idempotent checks)."""
        deadline = time.monotonic() + self._retry_for
        delay = 0.1
        timeout = httpx.Timeout(self._timeout, read=read_timeout) if read_timeout else None
        while True:
            try:
                response = await self._http().request(
                    method,
                    path,
                    json=json,
                    params=params,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                if not retry or time.monotonic() + delay > deadline:
                    raise GatewayUnavailable(
                        f"cannot reach the gateway at {self.url}: {exc}"
                    ) from exc
            else:
                if response.status_code < 500 or not retry or time.monotonic() + delay > deadline:
                    return _answer(response)
            await asyncio.sleep(delay)  # backoff before reconnecting, not a polling loop
            delay = min(delay * 2, 2.0)

    async def _check(
        self,
        action: str,
        params: dict[str, Any],
        actor: dict[str, str],
        context: dict[str, Any],
        labels: list[str],
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        body = {
            "action": action,
            "params": params,
            "actor": actor,
            "context": context,
            "labels": labels,
        }
        if idempotency_key:
            body["idempotency_key"] = idempotency_key
        return await self._call("POST", "/v1/checks", json=body, retry=bool(idempotency_key))

    async def _get(self, approval_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/approvals/{approval_id}", retry=True)

    async def _wait(self, approval_id: str, timeout: float) -> dict[str, Any]:
        return await self._call(
            "GET",
            f"/v1/approvals/{approval_id}/wait",
            params={"timeout": round(timeout, 3)},
            read_timeout=timeout + self._timeout,
            retry=True,
        )

    async def _release(
        self, approval_id: str, action: str, params: dict[str, Any], actor: dict[str, str]
    ) -> dict[str, Any]:
        body = {"action": action, "params": params, "actor": actor}
        return await self._call("POST", f"/v1/approvals/{approval_id}/release", json=body)

    async def _report(self, approval_id: str, state: str, result: str | None) -> dict[str, Any]:
        return await self._call(
            "POST",
            f"/v1/approvals/{approval_id}/result",
            json={"state": state, "result": result},
            retry=True,
        )

    async def _cancel(self, approval_id: str, reason: str) -> dict[str, Any]:
        return await self._call(
            "POST", f"/v1/approvals/{approval_id}/cancel", json={"reason": reason}, retry=True
        )

    async def _report_check(
        self,
        decision_id: str,
        action: str,
        params: dict[str, Any],
        actor: dict[str, str],
        state: str,
        result: str | None,
    ) -> dict[str, Any]:
        body = {
            "decision_id": decision_id,
            "action": action,
            "params": params,
            "actor": actor,
            "state": state,
            "result": result,
        }
        return await self._call("POST", f"/v1/checks/{decision_id}/result", json=body)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _answer(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 500:
        message = data.get("message") if isinstance(data, dict) else response.text[:200]
        raise GatewayUnavailable(f"the gateway answered {response.status_code}: {message}")
    if response.status_code >= 400:
        if isinstance(data, dict):
            raise GatewayError(
                response.status_code, str(data.get("error", "error")), str(data.get("message", ""))
            )
        raise GatewayError(response.status_code, "error", response.text[:200])
    if not isinstance(data, dict):
        raise GatewayError(response.status_code, "invalid_response", "the gateway sent no JSON")
    return data
