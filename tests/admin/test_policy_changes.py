"""Four eyes on policy and directory changes, through the HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from clearance.store.reads import read
from clearance.store.schema import approvals, audit_entries
from clearance.testing import FrozenClock

from .helpers import NEW_RULE, POLICY, Admin, admin_env

CHANGES = "/v1/admin/policy-changes"


async def audit_kinds(env: Admin) -> list[str]:
    def fetch(conn: Any) -> list[str]:
        rows = conn.execute(select(audit_entries.c.kind).order_by(audit_entries.c.seq))
        return [str(k) for k in rows.scalars()]

    return await read(env.gateway.db, fetch)


async def propose_rule(env: Admin, author: str = "ivan") -> dict[str, Any]:
    response = await env.client.post(
        CHANGES,
        json={"policy": POLICY + NEW_RULE, "summary": "allow reading reports"},
        headers=env.auth(author),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_another_admin_approves_and_the_change_takes_effect(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """A rule proposed by one admin is applied (file written, policy reloaded) only once
    another admin approves; the approvers are the admins other than the author."""
    async with admin_env(tmp_path, db_url, clock) as env:
        before = env.gateway.engine.version
        change = await propose_rule(env)
        assert change["action"] == "clearance.policy.change" and change["state"] == "pending"
        assert "+    - id: reports-read" in change["diff"]
        assert env.path.read_text() == POLICY  # nothing happens before the approval
        assert env.gateway.policy.rules[-1].id == "payments-medium"
        shown = await env.client.get(
            f"/v1/approvals/{change['approval_id']}", headers=env.auth("judy")
        )
        approval = shown.json()
        assert approval["action"] == "clearance.policy.change"
        assert approval["requester"] == "ivan"
        assert approval["stages"][0]["requirements"][0]["approvers"] == ["judy", "ken"]

        voted = await env.client.post(
            f"/v1/approvals/{change['approval_id']}/decisions",
            json={"decision": "approve", "comment": "looks right"},
            headers=env.auth("judy"),
        )
        assert voted.status_code == 200, voted.text
        await env.settled()
        assert env.path.read_text() == POLICY + NEW_RULE
        assert env.gateway.policy.rules[-1].id == "reports-read"
        assert env.gateway.engine.version != before
        after = await env.client.get(f"{CHANGES}/{change['id']}", headers=env.auth("ken"))
        assert after.json()["state"] == "applied"
        kinds = await audit_kinds(env)
        assert "admin.change_proposed" in kinds and "admin.change_applied" in kinds
        assert kinds.index("admin.change_applied") > kinds.index("policy.reload")


async def test_an_admin_cannot_approve_their_own_change(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """The author's own vote is refused (self_approval) and audited; nothing is applied."""
    async with admin_env(tmp_path, db_url, clock) as env:
        change = await propose_rule(env)
        voted = await env.client.post(
            f"/v1/approvals/{change['approval_id']}/decisions",
            json={"decision": "approve"},
            headers=env.auth("ivan"),
        )
        assert voted.status_code == 403
        assert voted.json()["error"] == "self_approval"
        await env.settled()
        assert env.path.read_text() == POLICY
        assert "vote.rejected" in await audit_kinds(env)
        again = await env.client.get(f"{CHANGES}/{change['id']}", headers=env.auth("ken"))
        assert again.json()["state"] == "pending"


async def test_a_policy_that_does_not_load_is_rejected_before_approval(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """A broken proposal gets the loader's file:line problems; no approval is created, and
    the rejection is audited."""
    async with admin_env(tmp_path, db_url, clock) as env:
        broken = POLICY + "    - id: typo\n      actions: [x]\n      effect: alow\n"
        response = await env.client.post(CHANGES, json={"policy": broken}, headers=env.auth("ivan"))
        assert response.status_code == 422
        body = response.json()
        assert body["error"] == "invalid_policy"
        assert any("clearance.yaml:" in p and "alow" in p for p in body["problems"])
        count = await read(env.gateway.db, lambda c: len(c.execute(select(approvals.c.id)).all()))
        assert count == 0
        assert "admin.change_rejected" in await audit_kinds(env)
        assert env.path.read_text() == POLICY


async def test_only_admins_may_propose(tmp_path: Path, db_url: str, clock: FrozenClock) -> None:
    """A person without the admin role is refused with 403."""
    async with admin_env(tmp_path, db_url, clock) as env:
        response = await env.client.post(
            CHANGES, json={"policy": POLICY + NEW_RULE}, headers=env.auth("alice")
        )
        assert response.status_code == 403


async def test_granting_a_role_is_a_directory_change(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """Granting `emergency` to bob edits only his entry (comments stay), and applies once
    another admin approves."""
    async with admin_env(tmp_path, db_url, clock) as env:
        response = await env.client.post(
            CHANGES,
            json={"directory": {"op": "grant_role", "person": "bob", "role": "emergency"}},
            headers=env.auth("judy"),
        )
        assert response.status_code == 201, response.text
        change = response.json()
        assert change["action"] == "clearance.directory.change"
        assert change["summary"] == "grant role emergency to bob"
        assert not env.gateway.policy.directory.has_role("bob", "emergency")
        voted = await env.client.post(
            f"/v1/approvals/{change['approval_id']}/decisions",
            json={"decision": "approve"},
            headers=env.auth("ken"),
        )
        assert voted.status_code == 200, voted.text
        await env.settled()
        assert env.gateway.policy.directory.has_role("bob", "emergency")
        text = env.path.read_text()
        assert text.startswith("# The admin test policy")
        bob = next(p for p in yaml.safe_load(text)["directory"]["people"] if p["id"] == "bob")
        assert bob == {
            "id": "bob",
            "name": "Bob Ortiz",
            "groups": ["managers"],
            "roles": ["emergency"],
        }


async def test_adding_a_person_to_a_group(tmp_path: Path, db_url: str, clock: FrozenClock) -> None:
    """add_to_group on a flow-style entry, then add_person: both validated and applied."""
    async with admin_env(tmp_path, db_url, clock) as env:
        first = await env.client.post(
            CHANGES,
            json={"directory": {"op": "add_to_group", "person": "carol", "group": "managers"}},
            headers=env.auth("ivan"),
        )
        assert first.status_code == 201, first.text
        await env.client.post(
            f"/v1/approvals/{first.json()['approval_id']}/decisions",
            json={"decision": "approve"},
            headers=env.auth("judy"),
        )
        await env.settled()
        assert "carol" in env.gateway.policy.directory.groups["managers"]
        second = await env.client.post(
            CHANGES,
            json={"directory": {"op": "add_person", "person": "zoe", "name": "Zoe Li",
                                "groups": ["staff"]}},
            headers=env.auth("ivan"),
        )  # fmt: skip
        assert second.status_code == 201, second.text
        assert "+    - {id: zoe, name: Zoe Li, groups: [staff]}" in second.json()["diff"]


async def test_a_change_to_a_file_edited_meanwhile_is_stale(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """If the file changed after the proposal, the approved change is marked stale, audited,
    and the file is left as it is."""
    async with admin_env(tmp_path, db_url, clock) as env:
        change = await propose_rule(env)
        edited = POLICY.replace("params.amount >= 500", "params.amount >= 600")
        env.path.write_text(edited)
        await env.client.post(
            f"/v1/approvals/{change['approval_id']}/decisions",
            json={"decision": "approve"},
            headers=env.auth("judy"),
        )
        await env.settled()
        assert env.path.read_text() == edited
        state = await env.client.get(f"{CHANGES}/{change['id']}", headers=env.auth("ken"))
        assert state.json()["state"] == "stale"
        assert "admin.change_stale" in await audit_kinds(env)


async def test_a_denied_change_is_not_applied(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """A change another admin denies is closed as rejected and the file stays."""
    async with admin_env(tmp_path, db_url, clock) as env:
        change = await propose_rule(env)
        await env.client.post(
            f"/v1/approvals/{change['approval_id']}/decisions",
            json={"decision": "deny", "comment": "not now"},
            headers=env.auth("ken"),
        )
        await env.settled()
        assert env.path.read_text() == POLICY
        state = await env.client.get(f"{CHANGES}/{change['id']}", headers=env.auth("ken"))
        assert state.json()["state"] == "rejected"


async def test_a_lone_admin_cannot_change_anything(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """With no other admin to decide, a proposal is refused (no_other_admin) and audited."""
    lone = POLICY.replace(
        "roles: [admin]}\n    - {id: judy, name: Judy Chen, roles: [admin]}",
        "roles: [admin]}\n    - {id: judy, name: Judy Chen}",
    )
    lone = lone.replace("roles: [admin, auditor]", "roles: [auditor]")
    async with admin_env(tmp_path, db_url, clock, lone) as env:
        response = await env.client.post(
            CHANGES, json={"policy": lone + NEW_RULE}, headers=env.auth("ivan")
        )
        assert response.status_code == 409
        assert response.json()["error"] == "no_other_admin"
        assert "admin.change_rejected" in await audit_kinds(env)


async def test_the_cli_lists_and_shows_changes(tmp_path: Path, clock: FrozenClock) -> None:
    """`clearance admin changes` lists a proposal; `clearance admin change ID` shows its diff."""
    from typer.testing import CliRunner

    from clearance.cli import app

    db = f"sqlite:///{tmp_path}/cli.db"
    async with admin_env(tmp_path, db, clock) as env:
        change = await propose_rule(env)
        options = ["--config", str(env.path), "--database-url", db]
        runner = CliRunner()
        listed = await asyncio.to_thread(runner.invoke, app, ["admin", "changes", *options])
        assert listed.exit_code == 0, listed.output
        assert change["id"] in listed.output and "allow reading reports" in listed.output
        shown = await asyncio.to_thread(
            runner.invoke, app, ["admin", "change", change["id"], *options]
        )
        assert shown.exit_code == 0 and "+    - id: reports-read" in shown.output
        missing = await asyncio.to_thread(runner.invoke, app, ["admin", "change", "x", *options])
        assert missing.exit_code == 1


async def test_admins_can_be_made_to_decide_with_a_second_factor(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """With `admin_changes: {mfa: totp}` another admin's vote needs a code, like any MFA stage."""
    from tests.mfa.helpers import enrol_totp

    text = POLICY + "server:\n  admin_changes: {mfa: totp}\n"
    async with admin_env(tmp_path, db_url, clock, text) as env:
        new_text = text.replace("server:", NEW_RULE + "server:")
        change = (
            await env.client.post(CHANGES, json={"policy": new_text}, headers=env.auth("ivan"))
        ).json()
        url = f"/v1/approvals/{change['approval_id']}/decisions"
        refused = await env.client.post(url, json={"decision": "approve"}, headers=env.auth("judy"))
        assert refused.json()["error"] == "mfa_required"
        totp = await enrol_totp(env.gateway, "judy", clock)
        clock.advance(seconds=30)
        done = await env.client.post(
            url, json={"decision": "approve", "totp": totp.at(clock())}, headers=env.auth("judy")
        )
        assert done.status_code == 200, done.text
        await env.settled()
        assert env.path.read_text() == new_text


async def test_a_change_approved_while_nothing_applied_it_is_applied_at_start(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """A crash between the approval and the file write loses nothing: `settle()` (run when
    the server starts) applies changes whose approval is already decided."""
    async with admin_env(tmp_path, db_url, clock) as env:
        change = await propose_rule(env)
        changes = env.app.state.admin_changes
        env.gateway.approvals.on_change.remove(changes._on_change)  # the "crash": no listener
        await env.gateway.approvals.decide(change["approval_id"], person="ken", decision="approve")
        await env.settled()
        assert env.path.read_text() == POLICY  # not applied yet
        [applied] = await changes.settle()  # what the lifespan does at start
        assert applied.state == "applied"
        assert env.path.read_text() == POLICY + NEW_RULE
        assert await changes.settle() == []  # once only


async def test_a_reload_that_fails_puts_the_old_text_back(
    tmp_path: Path, db_url: str, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the approved text no longer loads when applied (here: an environment variable it
    names is gone), the old file is restored, the old policy stays, and the change fails."""
    monkeypatch.setenv("CLEARANCE_TEST_URL", "http://clearance.test")
    text = POLICY + 'server: {public_url: "${CLEARANCE_TEST_URL}"}\n'
    async with admin_env(tmp_path, db_url, clock, text) as env:
        new_text = text.replace("server:", NEW_RULE + "server:")
        proposed = await env.client.post(
            CHANGES, json={"policy": new_text}, headers=env.auth("ivan")
        )
        assert proposed.status_code == 201, proposed.text
        change = proposed.json()
        monkeypatch.delenv("CLEARANCE_TEST_URL")
        await env.client.post(
            f"/v1/approvals/{change['approval_id']}/decisions",
            json={"decision": "approve"},
            headers=env.auth("judy"),
        )
        await env.settled()
        assert env.path.read_text() == text
        assert env.gateway.policy.rules[-1].id == "payments-medium"
        state = await env.client.get(f"{CHANGES}/{change['id']}", headers=env.auth("ken"))
        assert state.json()["state"] == "failed" and "CLEARANCE_TEST_URL" in state.json()["error"]
        assert "admin.change_failed" in await audit_kinds(env)


EMERGENCY_IVAN = POLICY.replace(
    "{id: ivan, name: Ivan Petrov, roles: [admin]}",
    "{id: ivan, name: Ivan Petrov, roles: [admin, emergency]}",
)
OVERRIDES = "controls:\n  override: {role: emergency, review_by: [ken], rate_limit: 3/24h}\n"
BREAK_GLASS = EMERGENCY_IVAN + OVERRIDES


async def test_an_emergency_override_cannot_release_a_gateway_change(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """Break-glass never stands in for four eyes: an admin with the emergency role can neither
    override their own pending policy change nor override one ahead of proposing it; and a
    change whose approval turned approved without an admin's vote is not applied."""
    from sqlalchemy import update

    from clearance import override as ovr
    from clearance.policy import Request
    from clearance.store.schema import approvals as approvals_table

    assert "emergency" in BREAK_GLASS
    async with admin_env(tmp_path, db_url, clock, text=BREAK_GLASS) as env:
        response = await env.client.post(
            CHANGES,
            json={"policy": EMERGENCY_IVAN + NEW_RULE + OVERRIDES, "summary": "reports"},
            headers=env.auth("ivan"),
        )
        assert response.status_code == 201, response.text
        change = response.json()
        with pytest.raises(ovr.OverrideRefused) as refused:
            await ovr.override(
                env.gateway, person="ivan", reason="urgent", approval_id=change["approval_id"]
            )
        assert refused.value.code == "not_overridable"
        ahead = Request("clearance.policy.change", {"summary": "x"}, {"user": "ivan"})
        with pytest.raises(ovr.OverrideRefused) as refused:
            await ovr.override(env.gateway, person="ivan", reason="urgent", request=ahead)
        assert refused.value.code == "not_overridable"
        stored = await env.gateway.approvals.get(change["approval_id"])
        assert stored.approval.state.value == "pending"
        assert "override.refused" in await audit_kinds(env)

        def force_approved(tx: Any) -> None:  # what a bypass of the checks above would leave
            tx.conn.execute(
                update(approvals_table)
                .where(approvals_table.c.id == change["approval_id"])
                .values(state="approved")
            )

        await env.gateway.writer.run(force_approved)
        await env.app.state.admin_changes.settle(change["approval_id"])
        assert env.path.read_text() == BREAK_GLASS
        after = await env.client.get(f"{CHANGES}/{change['id']}", headers=env.auth("ken"))
        assert after.json()["state"] == "rejected"
