"""The Slack-shaped demo: a real server, the fake Slack with its page, and a click."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from clearance.gateway import Gateway
from clearance.testing.fakes import serve_in_thread
from clearance.testing.fakes.slack import FakeSlack
from clearance.testing.fakes.slack_ui import install

from ..fixtures import ENTERPRISE, make_keys
from ..serverproc import ServerProcess, free_port


async def test_clicking_approve_on_the_fake_slack_page_approves(tmp_path: Path) -> None:
    """A DM shows up on the fake workspace's page; its Approve button approves the request."""
    port = free_port()
    slack = FakeSlack()
    install(slack, f"http://127.0.0.1:{port}")
    fake = serve_in_thread(slack.app)
    channels = tmp_path / "slack.yaml"
    channels.write_text(
        f"channels:\n  slack: {{bot_token: {slack.bot_token}, signing_secret: "
        f"{slack.signing_secret}, base_url: '{fake.url}/api/'}}\n"
    )
    url = f"sqlite:///{tmp_path}/c.db"
    setup = Gateway.open([ENTERPRISE, channels], database_url=url)
    keys = make_keys(setup)
    await setup.aclose()
    config = tmp_path / "both.yaml"
    config.write_text(ENTERPRISE.read_text() + "\n" + channels.read_text())
    server = ServerProcess(config, url, tmp_path / "server.log", port=port)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            check = await http.post(
                "/v1/checks",
                json={
                    "action": "payments.transfer",
                    "params": {"amount": 2000, "destination_country": "US"},
                    "actor": {"user": "carol"},
                },
                headers={"authorization": f"Bearer {keys.agent}"},
            )
            approval_id = check.json()["approval_id"]
            page = ""
            async with httpx.AsyncClient(base_url=fake.url) as ui:
                for _ in range(100):
                    page = (await ui.get("/")).text
                    if 'name="ts"' in page:
                        break
                    await asyncio.sleep(0.1)
                assert "payments.transfer" in page
                channel = re.search(r'name="channel" value="([^"]+)"', page)
                ts = re.search(r'name="ts" value="([^"]+)"', page)
                assert channel and ts
                done = await ui.post(
                    "/click", data={"channel": channel[1], "ts": ts[1], "action": "approve"}
                )
                assert done.status_code == 303
            state = await http.get(
                f"/v1/approvals/{approval_id}/wait?timeout=10",
                headers={"authorization": f"Bearer {keys.agent}"},
            )
            assert state.json()["state"] == "approved"
            assert state.json()["votes"][0]["channel"] == "slack"
    finally:
        server.stop()
        fake.stop()
