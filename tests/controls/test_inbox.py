"""The web inbox: "Approve always", the grants page, break glass and reviews."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from clearance import grants
from clearance import override as ovr
from clearance.audit.writer import WriteTx
from clearance.gateway import Gateway
from clearance.identity import passwords
from clearance.testing import FrozenClock

from ..fixtures import csrf_of, inbox_as
from .helpers import open_gateway, pay

PASSWORD = "correct-horse-battery"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    gateway = open_gateway(tmp_path, f"sqlite:///{tmp_path}/c.db", FrozenClock())

    def work(tx: WriteTx) -> None:
        for person in ("alice", "frank", "sam"):
            passwords.set_password(tx.conn, person, PASSWORD, gateway.clock())

    await gateway.writer.run(work)
    yield gateway
    await gateway.aclose()


@contextlib.asynccontextmanager
async def signed_in(gw: Gateway, person: str) -> AsyncIterator[httpx.AsyncClient]:
    async with inbox_as(gw, person, PASSWORD, set_password=False) as client:
        yield client


async def test_approve_always_from_the_inbox_and_revoke(gw: Gateway) -> None:
    """The request page offers "Approve always"; using it creates a grant, which the grants
    page lists and revokes."""
    held = await gw.check(pay())
    assert held.approval is not None
    approval_id = held.approval.approval.id
    async with signed_in(gw, "alice") as client:
        page = await client.get(f"/ui/approvals/{approval_id}")
        assert "Approve always" in page.text and "params.payee_id = acme" in page.text
        done = await client.post(
            f"/ui/approvals/{approval_id}/decide",
            data={"csrf_token": csrf_of(page.text), "decision": "always", "comment": "ok"},
        )
        assert done.status_code == 303
        made = await grants.list_grants(gw.db, now=gw.clock())
        assert [g.grantor for g in made] == ["alice"]
        listing = await client.get("/ui/grants")
        assert made[0].id in listing.text
        revoked = await client.post(
            f"/ui/grants/{made[0].id}/revoke",
            data={"csrf_token": csrf_of(listing.text), "reason": "no longer needed"},
        )
        assert revoked.status_code == 303
        assert await grants.list_grants(gw.db, now=gw.clock(), live_only=True) == []


async def test_no_always_button_on_a_multi_stage_request(gw: Gateway) -> None:
    """A request whose rule does not allow grants shows no "Approve always"."""
    held = await gw.check(pay(amount=9000))
    assert held.approval is not None
    async with signed_in(gw, "alice") as client:
        page = await client.get(f"/ui/approvals/{held.approval.approval.id}")
        assert "Approve always" not in page.text and ">Approve</button>" in page.text


async def test_break_glass_and_review_in_the_inbox(gw: Gateway) -> None:
    """Frank overrides a pending request; he cannot review it (a forged form is refused); Sam
    marks it justified."""
    held = await gw.check(pay(amount=9000))
    assert held.approval is not None
    approval_id = held.approval.approval.id
    async with signed_in(gw, "frank") as client:
        page = await client.get("/ui/overrides")
        assert "Override now" in page.text
        token = csrf_of(page.text)
        missing = await client.post(
            "/ui/overrides", data={"csrf_token": token, "approval_id": approval_id}
        )
        assert missing.status_code == 400 and "needs a reason" in missing.text
        done = await client.post(
            "/ui/overrides",
            data={"csrf_token": token, "approval_id": approval_id, "reason": "outage"},
        )
        assert done.status_code == 303
        [record] = await ovr.list_overrides(gw.db)
        listing = await client.get("/ui/overrides")
        assert f"/ui/overrides/{record.id}/review" not in listing.text
        forged = await client.post(
            f"/ui/overrides/{record.id}/review",
            data={"csrf_token": token, "verdict": "justified"},
        )
        assert forged.status_code == 403
    assert (await gw.approvals.get(approval_id)).approval.state == "approved"
    async with signed_in(gw, "sam") as client:
        page = await client.get("/ui/overrides")
        assert "Override now" not in page.text
        assert f"/ui/overrides/{record.id}/review" in page.text
        done = await client.post(
            f"/ui/overrides/{record.id}/review",
            data={"csrf_token": csrf_of(page.text), "verdict": "justified", "comment": ""},
        )
        assert done.status_code == 303
    [reviewed] = await ovr.list_overrides(gw.db)
    assert reviewed.review_state == "justified" and reviewed.reviewed_by == "sam"


async def test_override_form_needs_the_csrf_token(gw: Gateway) -> None:
    """A POST without the session's CSRF token changes nothing."""
    held = await gw.check(pay(amount=9000))
    assert held.approval is not None
    async with signed_in(gw, "frank") as client:
        refused = await client.post(
            "/ui/overrides",
            data={"approval_id": held.approval.approval.id, "reason": "x"},
        )
        assert refused.status_code == 403
    assert await ovr.list_overrides(gw.db) == []
