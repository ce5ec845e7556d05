"""`clearance demo --fake NAME` for every platform: a real gateway process, the platform's fake
with its page, and clicks on that page — the agent waits, the message arrives on the page,
a click sends the platform's signed callback, the agent proceeds, the message is updated."""

from __future__ import annotations

import asyncio
import html
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from clearance.cli import app as cli
from clearance.gateway import Gateway
from clearance.testing.fakes import demo

from ..fixtures import ENTERPRISE, make_keys
from ..serverproc import ServerProcess, free_port

TRANSFER = {
    "action": "payments.transfer",
    "params": {"amount": 2000, "destination_country": "US"},
    "actor": {"user": "carol"},
}


async def _until(get: httpx.AsyncClient, path: str, pattern: str, seconds: float = 30) -> str:
    """The page at `path` once `pattern` is on it."""
    page = ""
    for _ in range(int(seconds * 10)):
        page = (await get.get(path)).text
        if re.search(pattern, page):
            return page
        await asyncio.sleep(0.1)
    raise AssertionError(f"{pattern!r} never showed up on {path}:\n{page[-3000:]}")


_KEY = r'name="key" value="([^"]*)"'
_ALICES_LINK = r'<h2>To alice@example\.com:(?:(?!</article>).)*?href="([^"]*confirm\?t=[^"]*)"'


async def _buttons(page: httpx.AsyncClient) -> set[str]:
    """What identifies the clickable messages (email: alice's links) on the page now."""
    text = (await page.get("/")).text
    return set(re.findall(_KEY, text)) | set(re.findall(_ALICES_LINK, text, re.S))


async def _new_button(page: httpx.AsyncClient, before: set[str]) -> str:
    """A clickable message that was not on the page before (the request just made)."""
    for _ in range(300):
        new = (await _buttons(page)) - before
        if new:
            return html.unescape(sorted(new)[0])
        await asyncio.sleep(0.1)
    raise AssertionError(f"no new message on the page:\n{(await page.get('/')).text[-3000:]}")


async def _decide(
    page: httpx.AsyncClient, name: str, action: str, before: set[str], gateway_url: str
) -> None:
    """Click `action` on the new message (email: follow alice's link to the gateway's
    confirmation page and confirm there, as her browser would)."""
    found = await _new_button(page, before)
    if name != "email":
        data = {"key": found, "action": action, "reason": "not this month"}
        clicked = await page.post("/click", data=data)
        assert clicked.status_code == 303, clicked.text
        return
    parts = urlsplit(found)
    query = parts.query.replace("d=approve", f"d={action}")
    async with httpx.AsyncClient() as browser:  # the demo's public URL names port 8750: ours
        confirm = await browser.get(f"{gateway_url}{parts.path}?{query}")
        fields = dict(
            re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', confirm.text)
        )
        assert fields.get("d") == action, confirm.text
        fields["reason"] = "not this month"
        done = await browser.post(f"{gateway_url}{parts.path}", data=fields)
        assert done.status_code == 200, done.text


@pytest.mark.parametrize("name", demo.NAMES)
async def test_a_click_on_the_fake_page_decides_and_updates_the_message(
    tmp_path: Path, name: str
) -> None:
    """Through the page of the fake `name`, alice approves one transfer and denies another;
    each waiting agent gets its answer and the page shows the updated message."""
    port = free_port()
    gateway_url = f"http://127.0.0.1:{port}"
    running = demo.start(name, gateway_url, port=0)
    try:
        config = tmp_path / "demo.yaml"
        channels = json.dumps({name: running.settings})
        config.write_text(ENTERPRISE.read_text() + f"\nchannels: {channels}\n")
        url = f"sqlite:///{tmp_path}/c.db"
        setup = Gateway.open([config], database_url=url)
        keys = make_keys(setup)
        await setup.aclose()
        server = ServerProcess(config, url, tmp_path / "server.log", port=port)
        server.start()
        agent = {"authorization": f"Bearer {keys.agent}"}
        try:
            async with (
                httpx.AsyncClient(base_url=server.url, headers=agent, timeout=20) as api,
                httpx.AsyncClient(base_url=running.url, timeout=20) as page,
            ):
                for action, outcome, status in (
                    ("approve", "approved", "Approved by Alice Ng"),
                    ("deny", "denied", "Denied by Alice Ng: not this month"),
                ):
                    before = await _buttons(page)
                    check = (await api.post("/v1/checks", json=TRANSFER)).json()
                    approval_id = check["approval_id"]
                    waiting = asyncio.create_task(
                        api.get(f"/v1/approvals/{approval_id}/wait?timeout=20")
                    )
                    await _decide(page, name, action, before, server.url)
                    state = (await waiting).json()
                    assert state["state"] == outcome
                    assert state["votes"][0]["person"] == "alice"
                    assert state["votes"][0]["channel"] == name
                    await _until(page, "/", re.escape(html.escape(status)))
        finally:
            server.stop()
    finally:
        running.stop()


def test_an_unknown_fake_is_a_clear_error() -> None:
    """`clearance demo --fake nope` fails at once, naming the fakes there are."""
    result = CliRunner().invoke(cli, ["demo", "--fake", "nope"])
    assert result.exit_code != 0
    out = result.output
    assert "nope" in out
    for name in demo.NAMES:
        assert name in out
