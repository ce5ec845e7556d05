"""End to end in a real browser: an agent waits, alice approves in the inbox, the agent goes on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from clearance.sdk.remote import RemoteGate

from .conftest import PASSWORD, LiveServer, give_password

TRANSFER = {"amount": 2000, "destination_country": "US"}
ACTOR = {"user": "carol", "agent": "billing-bot"}


@contextlib.asynccontextmanager
async def waiting_agent(server: LiveServer) -> AsyncIterator[asyncio.Task[Any]]:
    """billing-bot asking for a $2,000 transfer for carol and waiting in `require_approval`
    (the task); cancelled if still waiting when the test ends."""
    gate = RemoteGate(server.url, server.agent_token)
    agent = asyncio.create_task(
        gate.require_approval("payments.transfer", TRANSFER, actor=ACTOR, timeout=90)
    )
    try:
        yield agent
    finally:
        if not agent.done():
            agent.cancel()
        await gate.aclose()


async def pending_approval(server: LiveServer, timeout: float = 15.0) -> str:
    """The id of the approval the agent's check opened, once it exists."""
    headers = {"authorization": f"Bearer {server.agent_token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = await client.get("/v1/approvals", params={"state": "pending"})
            approvals = found.json()["approvals"]
            if approvals:
                return str(approvals[0]["id"])
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("the agent's request never became a pending approval")
            await asyncio.sleep(0.1)  # the agent task has not reached the gateway yet


async def test_alice_approves_a_waiting_agent_call_from_the_inbox(
    browser: Any, live_server: LiveServer, tmp_path: Path
) -> None:
    """An agent blocked in require_approval returns approved once alice approves in Chromium."""
    from playwright.async_api import expect

    async with waiting_agent(live_server) as agent:
        approval_id = await pending_approval(live_server)
        assert not agent.done()  # the agent is waiting for a person

        page = await browser.new_page(viewport={"width": 1280, "height": 860})
        await page.goto(f"{live_server.url}/ui")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await page.get_by_label("Person id").fill("alice")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()

        await expect(page.get_by_role("heading", name="Waiting on you")).to_be_visible()
        row = page.get_by_role("row").filter(has_text="amount: 2000")
        await expect(row).to_contain_text("payments.transfer")
        await expect(row).to_contain_text("Carol Diaz")
        await page.screenshot(path=str(tmp_path / "inbox.png"), full_page=True)

        await row.get_by_role("link", name="payments.transfer").click()
        await page.wait_for_url(f"**/ui/approvals/{approval_id}")
        await expect(page.get_by_role("cell", name="2000", exact=True)).to_be_visible()
        await page.screenshot(path=str(tmp_path / "request.png"), full_page=True)

        await page.get_by_label("Comment").fill("Checked the invoice with Carol")
        await page.get_by_role("button", name="Approve", exact=True).click()
        await expect(page.get_by_role("status")).to_contain_text("You approved this request.")
        await page.screenshot(path=str(tmp_path / "approved.png"), full_page=True)

        approval = await asyncio.wait_for(agent, timeout=30)
        assert approval.effect == "approve" and approval.id == approval_id
        assert "alice" in approval.approvers


async def sign_in(page: Any, url: str, person: str) -> None:
    from playwright.async_api import expect

    await page.goto(f"{url}/ui")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Person id").fill(person)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Waiting on you")).to_be_visible()


async def test_alice_names_a_delegate_in_the_inbox_and_dana_decides_for_her(
    browser: Any, live_server: LiveServer, tmp_path: Path
) -> None:
    """Out of office from the web inbox: alice picks Dana Kim and her last day away in
    Chromium's date field; the agent's next transfer, which needs a manager, reaches dana; dana
    approves it in alice's seat ("dana for alice") and the waiting agent goes on."""
    from playwright.async_api import expect

    give_password(live_server, "dana")
    last_day = (datetime.now(UTC) + timedelta(days=7)).date().isoformat()

    alice = await browser.new_page(viewport={"width": 1280, "height": 860})
    await sign_in(alice, live_server.url, "alice")
    await alice.get_by_role("link", name="Delegation").click()
    await expect(alice.get_by_role("heading", name="Delegation", exact=True)).to_be_visible()
    await expect(alice.locator("#current-delegate")).to_have_text("You have no delegate.")
    await alice.get_by_label("Delegate").select_option("dana")
    await alice.get_by_label("Last day away").fill(last_day)
    await alice.get_by_role("button", name="Name a delegate").click()
    await expect(alice.get_by_role("status")).to_contain_text("Your delegate is set.")
    await expect(alice.locator("#current-delegate")).to_contain_text("Your delegate is Dana Kim")
    await alice.screenshot(path=str(tmp_path / "delegation.png"), full_page=True)

    async with waiting_agent(live_server) as agent:
        approval_id = await pending_approval(live_server)
        dana = await (await browser.new_context()).new_page()
        await sign_in(dana, live_server.url, "dana")
        row = dana.get_by_role("row").filter(has_text="amount: 2000")
        await expect(row).to_contain_text("payments.transfer")
        await row.get_by_role("link", name="payments.transfer").click()
        await dana.wait_for_url(f"**/ui/approvals/{approval_id}")
        await expect(dana.get_by_text("dana for alice").first).to_be_visible()
        await dana.get_by_role("button", name="Approve", exact=True).click()
        await expect(dana.get_by_role("status")).to_contain_text("You approved this request.")
        voted = dana.get_by_text("Votes by delegates: dana for alice (approved)")
        await expect(voted).to_be_visible()
        await dana.screenshot(path=str(tmp_path / "delegate-approved.png"), full_page=True)

        approval = await asyncio.wait_for(agent, timeout=30)
        assert approval.effect == "approve" and approval.id == approval_id
        assert "dana" in approval.approvers
