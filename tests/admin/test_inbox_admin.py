"""Admin changes in the web inbox: propose with a form, see the diff, decide as another admin."""

from __future__ import annotations

import html
from pathlib import Path

import httpx

from clearance.audit.writer import WriteTx
from clearance.identity import passwords
from clearance.testing import FrozenClock

from ..fixtures import csrf_of
from .helpers import NEW_RULE, POLICY, Admin, admin_env

PASSWORD = "correct-horse-battery"


async def sign_in(env: Admin, person: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=env.app), base_url="http://test")
    form = await client.get("/ui/login")
    done = await client.post(
        "/ui/login", data={"person": person, "password": PASSWORD, "csrf_token": csrf_of(form.text)}
    )
    assert done.status_code == 303
    return client


async def test_propose_in_the_inbox_and_approve_as_another_admin(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """Ivan proposes a rule in the inbox; the approval page shows the diff; Ivan cannot
    approve it himself; Judy can, and the rule is then in force."""
    async with admin_env(tmp_path, db_url, clock) as env:
        now = clock()

        def setup(tx: WriteTx) -> None:
            for person in ("ivan", "judy", "alice"):
                passwords.set_password(tx.conn, person, PASSWORD, now)

        await env.gateway.writer.run(setup)
        ivan = await sign_in(env, "ivan")
        page = await ivan.get("/ui/admin")
        assert page.status_code == 200 and "payments-medium" in page.text
        proposed = await ivan.post(
            "/ui/admin/policy",
            data={"csrf_token": csrf_of(page.text), "policy": POLICY + NEW_RULE,
                  "summary": "allow reading reports"},
        )  # fmt: skip
        assert proposed.status_code == 303
        target = proposed.headers["location"]
        mine = await ivan.get(target)
        text = html.unescape(mine.text)
        assert "Proposed change" in text and "+    - id: reports-read" in text
        assert "requested this action and cannot vote" in text  # no buttons for the author
        assert 'value="approve"' not in mine.text

        judy = await sign_in(env, "judy")
        theirs = await judy.get(target)
        assert 'value="approve"' in theirs.text
        voted = await judy.post(
            f"{target}/decide", data={"csrf_token": csrf_of(theirs.text), "decision": "approve"}
        )
        assert voted.status_code == 303
        await env.settled()
        assert env.gateway.policy.rules[-1].id == "reports-read"

        broken = await ivan.post(
            "/ui/admin/policy",
            data={"csrf_token": csrf_of(page.text), "policy": POLICY + "    - {id: x}\n"},
        )
        assert broken.status_code == 422
        assert "clearance.yaml:" in html.unescape(broken.text)

        alice = await sign_in(env, "alice")
        assert (await alice.get("/ui/admin")).status_code == 403
        for client in (ivan, judy, alice):
            await client.aclose()
