"""The text fallback: `/approve <id> [approve|deny] [reason…]` and `/deny <id> <reason…>`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearance.channels.textcommand import (
    LINE_MAX,
    Command,
    CommandError,
    clip,
    fit_lines,
    parse,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/approve apr_1", Command("apr_1", "approve")),
        ("  /APPROVE apr_1  ", Command("apr_1", "approve")),
        ("/approve apr_1 approve", Command("apr_1", "approve")),
        ("/approve apr_1 approve looks fine", Command("apr_1", "approve", "looks fine")),
        ("/approve apr_1 Deny too big", Command("apr_1", "deny", "too big")),
        ("/deny apr_1 not during the freeze", Command("apr_1", "deny", "not during the freeze")),
        ("/deny apr_1 line one\nline two", Command("apr_1", "deny", "line one\nline two")),
        ("/approve@clearance_bot apr_1", Command("apr_1", "approve")),
    ],
)
def test_well_formed_commands_parse(text: str, expected: Command) -> None:
    """Each documented form yields the request id, the decision and the comment."""
    assert parse(text, bot_username="clearance_bot") == expected


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("/approve", "Which request?"),
        ("/deny", "Which request?"),
        ("/approve apr_1 yes please", "approve or deny"),
        ("/approve apr_1 deny", "needs a reason"),
        ("/deny apr_1", "needs a reason"),
        ("/deny apr_1 approve", "/approve apr_1"),
        ("/approve <apr_1>", "not a request id"),
        ("/deny apr_1 " + "x" * 1001, "too long"),
    ],
)
def test_malformed_commands_explain_what_to_type(text: str, hint: str) -> None:
    """A malformed command of ours raises CommandError whose text helps the sender."""
    with pytest.raises(CommandError, match=hint):
        parse(text)


@pytest.mark.parametrize(
    "text",
    ["hello", "approve apr_1", "/approved apr_1", "/start", "", "/approve@other_bot apr_1"],
)
def test_other_text_is_not_a_command(text: str) -> None:
    """Plain text, other commands and commands for another bot are not ours."""
    assert parse(text, bot_username="clearance_bot") is None


def test_command_becomes_an_interaction_for_the_verified_sender() -> None:
    """The interaction carries the sender the platform verified, never one from the text."""
    command = parse("/deny apr_9 because")
    assert command is not None
    interaction = command.interaction(event_id="e1", user_id="555", reply_ref={"chat_id": 5})
    assert (interaction.user_id, interaction.approval_id, interaction.decision) == (
        "555",
        "apr_9",
        "deny",
    )
    assert interaction.comment == "because" and interaction.token is None
    assert interaction.reply_ref == {"chat_id": 5}


@given(st.text(max_size=200))
def test_parsing_never_fails_unexpectedly(text: str) -> None:
    """Any text parses to a command, to None, or to a CommandError — nothing else."""
    try:
        command = parse(text)
    except CommandError as exc:
        assert str(exc)
        return
    if command is not None:
        assert command.decision in ("approve", "deny")
        assert command.decision == "approve" or command.comment


def test_fit_lines_keeps_head_and_tail_within_budget() -> None:
    """Long texts keep the first and last lines, drop the middle with a marker, and fit."""
    lines = ["who", *(f"  param{i}: {'v' * 50}" for i in range(100)), "stage", "deadline"]
    fitted = fit_lines(lines, 1000)
    assert fitted[0] == "who" and fitted[-2:] == ["stage", "deadline"]
    assert "more lines" in fitted[-3]
    assert len("\n".join(fitted)) <= 1000
    assert fit_lines(["a", "b"], 100) == ["a", "b"]
    assert len(fit_lines(["x" * 1000], 2000)[0]) == LINE_MAX
    assert len("\n".join(fit_lines(["y" * 300] * 3, 50))) <= 50
    assert clip("abcdef", 4) == "abc…"
