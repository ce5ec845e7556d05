"""The pure hash chain: its encoding, and verification naming the first bad entry."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clearance.audit.chain import (
    ENCODING_VERSION,
    GENESIS,
    Anchor,
    Head,
    canonical_ts,
    checkpoint_hash,
    encode_draft,
    encode_parts,
    entry_hash,
    verify,
)
from clearance.audit.entry import KINDS, AuditDraft, AuditEntry, Kind, entry_from_draft
from clearance.canonical import canonical_json

from .chains import chain, draft, head_of, make_chain, with_field

# -- the encoding ---------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
maybe_text = st.none() | st.text(max_size=12)
drafts = st.builds(
    AuditDraft,
    kind=st.sampled_from(sorted(KINDS)) | st.text(max_size=10),
    ts=st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    ),
    actor=maybe_text,
    approver=maybe_text,
    channel=maybe_text,
    action=maybe_text,
    params_hash=maybe_text,
    effect=maybe_text,
    rule_ids=st.lists(st.text(max_size=8), max_size=3).map(tuple),
    policy_version=maybe_text,
    approval_id=maybe_text,
    data=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
)


def documented_encoding(prev: str, chain_id: str, seq: int, d: AuditDraft) -> str:
    """The encoding exactly as the module docstring describes it, via canonical_json."""
    return canonical_json(
        [
            ENCODING_VERSION,
            prev,
            chain_id,
            seq,
            d.ts.astimezone(UTC).isoformat(timespec="microseconds"),
            d.kind,
            d.actor,
            d.approver,
            d.channel,
            d.action,
            d.params_hash,
            d.effect,
            canonical_json(list(d.rule_ids)),
            d.policy_version,
            d.approval_id,
            canonical_json(dict(d.data)),
        ]
    )


@settings(max_examples=200, deadline=None)
@given(d=drafts, seq=st.integers(min_value=1, max_value=2**62), chain_id=st.text(max_size=10))
def test_hash_is_sha256_of_the_documented_canonical_array(
    d: AuditDraft, seq: int, chain_id: str
) -> None:
    """entry_hash equals SHA-256 of canonical_json of the array the docstring documents."""
    expected = hashlib.sha256(
        documented_encoding(GENESIS, chain_id, seq, d).encode("utf-8")
    ).hexdigest()
    assert entry_hash(GENESIS, chain_id, seq, d) == expected


@given(parts=st.lists(st.none() | st.text() | st.integers(), max_size=20))
def test_encode_parts_is_canonical_json(parts: list[Any]) -> None:
    """The fast array encoder produces exactly canonical_json's output."""
    assert encode_parts(parts) == canonical_json(parts)
    assert encode_parts(tuple(parts)) == canonical_json(parts)


def test_encoding_distinguishes_null_empty_and_the_word_null() -> None:
    """None, "" and "null" in a field give three different hashes."""
    hashes = {entry_hash(GENESIS, "main", 1, draft(actor=v)) for v in (None, "", "null")}
    assert len(hashes) == 3


def test_same_instant_in_another_zone_hashes_the_same() -> None:
    """The timestamp is hashed as UTC, so its zone of origin does not matter."""
    local = draft(ts=datetime(2025, 1, 31, 15, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))))
    utc = draft(ts=datetime(2025, 1, 31, 9, 30, tzinfo=UTC))
    assert entry_hash(GENESIS, "main", 1, local) == entry_hash(GENESIS, "main", 1, utc)
    assert canonical_ts(local.ts) == "2025-01-31T09:30:00.000000+00:00"


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"ts": datetime(2025, 1, 1)}, "timezone-aware"),
        ({"data": {"when": datetime(2025, 1, 1, tzinfo=UTC)}}, "cannot be encoded"),
        ({"data": {"x": float("nan")}}, "cannot be encoded"),
        ({"data": {"x": "\ud800"}}, "cannot be encoded"),
        ({"actor": 42}, "cannot be encoded"),
    ],
)
def test_unencodable_drafts_are_refused(overrides: dict[str, Any], why: str) -> None:
    """A draft that cannot be encoded exactly (naive time, non-JSON data, lone surrogate,
    wrong type) is refused with ValueError before it could reach a batch."""
    with pytest.raises(ValueError, match=why):
        encode_draft(draft(**overrides))


def test_kinds_lists_every_documented_kind() -> None:
    """KINDS holds the fifteen kinds named in `Kind`."""
    assert Kind.APPROVAL_RELEASED in KINDS and Kind.KEY_REVOKED in KINDS
    assert Kind.RISK_SEEN == "risk.seen" and Kind.RISK_SEEN in KINDS
    assert len(KINDS) == 15


def test_entry_from_draft_equals_the_constructor() -> None:
    """The writer's fast entry factory builds exactly what the dataclass constructor does."""
    d = draft(3)
    fast = entry_from_draft(d, "main", 7, "p" * 64, "h" * 64)
    slow = chain([d])[0]
    assert fast == AuditEntry(
        **{k: getattr(slow, k) for k in AuditDraft.__dataclass_fields__},
        chain_id="main",
        seq=7,
        prev_hash="p" * 64,
        hash="h" * 64,
    )


def test_checkpoint_hash_covers_time_and_every_head() -> None:
    """Changing the time or any head of a checkpoint changes its hash."""
    heads = {"a": Head(3, "x" * 64), "b": Head(5, "y" * 64)}
    base = checkpoint_hash(datetime(2025, 1, 1, tzinfo=UTC), heads)
    assert base != checkpoint_hash(datetime(2025, 1, 2, tzinfo=UTC), heads)
    assert base != checkpoint_hash(datetime(2025, 1, 1, tzinfo=UTC), {**heads, "b": Head(6, "y")})


# -- verification ---------------------------------------------------------------------------


def test_a_valid_chain_verifies() -> None:
    """An untouched chain passes, with its length and last hash summarised."""
    entries = make_chain(5)
    report = verify(entries, head_of(entries))
    assert report.ok and report.first_problem is None
    assert report.entries_checked == 5
    assert report.chains[0].last_seq == 5 and report.chains[0].last_hash == entries[-1].hash
    assert report.summary().startswith("OK: 5 entries in 1 chain")


def test_empty_input_verifies() -> None:
    """No entries and no heads is a valid (empty) trail."""
    assert verify([]).ok


def test_altered_entry_is_named() -> None:
    """Changing an entry's contents is reported as that entry being altered."""
    entries = make_chain(60)
    entries[41] = with_field(entries[41], effect="deny")
    problem = verify(entries, head_of(make_chain(60))).first_problem
    assert problem is not None
    assert (problem.chain_id, problem.seq) == ("main", 42)
    assert problem.reason == (
        "entry 42 of chain 'main' was altered: its hash does not match its contents"
    )


def test_deleted_middle_entry_is_named() -> None:
    """Removing an entry from the middle is reported as that entry missing."""
    entries = make_chain(50)
    del entries[42]  # seq 43
    problem = verify(entries).first_problem
    assert problem is not None
    assert (problem.chain_id, problem.seq) == ("main", 43)
    assert problem.reason == "entry 43 of chain 'main' is missing (deleted?)"


def test_deleted_first_entries_are_named() -> None:
    """Removing the first entries is reported as entry 1 missing."""
    problem = verify(make_chain(5)[2:]).first_problem
    assert problem is not None and problem.seq == 1


def test_deleted_tail_is_caught_by_the_head() -> None:
    """Removing the last entries passes the links, but not the head record."""
    full = make_chain(10)
    heads = head_of(full)
    assert verify(full[:7]).ok  # without the head, a truncated chain looks fine
    problem = verify(full[:7], heads).first_problem
    assert problem is not None
    assert problem.seq == 8
    assert "entry 8 of chain 'main' is missing" in problem.reason
    assert "head records entry 10 (tail deleted?)" in problem.reason


def test_all_entries_deleted_is_caught_by_the_head() -> None:
    """A chain whose entries are all gone, but whose head remains, is reported."""
    problem = verify([], head_of(make_chain(3))).first_problem
    assert problem is not None and problem.seq == 1 and "has no entries" in problem.reason


def test_missing_head_is_reported() -> None:
    """With heads given, a chain without a head record is reported."""
    problem = verify(make_chain(3), {}).first_problem
    assert problem is not None and problem.seq is None and "no head record" in problem.reason


def test_entries_past_the_head_are_reported() -> None:
    """Entries beyond the recorded head (appended around the writer) are reported."""
    entries = make_chain(5)
    problem = verify(entries, head_of(entries[:3])).first_problem
    assert problem is not None and problem.seq == 4 and "past the chain's head" in problem.reason


def test_rehashed_tail_is_caught_by_the_head() -> None:
    """Rewriting the last entry and recomputing its hash does not match the head."""
    entries = make_chain(4)
    heads = head_of(entries)
    forged = chain([*[e.to_draft() for e in entries[:3]], draft(3, effect="deny")])
    problem = verify(forged, heads).first_problem
    assert problem is not None and problem.seq == 4 and "head record" in problem.reason


def test_reordered_entries_are_named() -> None:
    """Swapping two entries' contents (keeping their seq numbers) breaks the link at the
    first of them."""
    entries = make_chain(10)
    a, b = entries[4], entries[5]
    entries[4] = with_field(b, seq=5)
    entries[5] = with_field(a, seq=6)
    problem = verify(entries).first_problem
    assert problem is not None
    assert problem.seq == 5
    assert problem.reason.startswith("entry 5 of chain 'main' does not link to entry 4")


def test_entries_out_of_order_are_reported() -> None:
    """Entries delivered out of seq order are reported at the first gap."""
    entries = make_chain(6)
    entries[2], entries[3] = entries[3], entries[2]
    problem = verify(entries).first_problem
    assert problem is not None and problem.seq == 3


def test_duplicated_entry_is_reported() -> None:
    """An entry that appears twice is reported as out of order."""
    entries = make_chain(4)
    entries.insert(2, entries[1])
    problem = verify(entries).first_problem
    assert problem is not None and problem.seq == 2 and "out of order" in problem.reason


def test_altered_prev_hash_is_named() -> None:
    """Changing an entry's prev_hash breaks its link, and it is named."""
    entries = make_chain(8)
    entries[6] = with_field(entries[6], prev_hash="f" * 64)
    problem = verify(entries).first_problem
    assert problem is not None
    assert problem.seq == 7 and "prev_hash does not match" in problem.reason


def test_altered_genesis_link_is_named() -> None:
    """The first entry must link to GENESIS."""
    entries = make_chain(3)
    entries[0] = with_field(entries[0], prev_hash="1" * 64)
    problem = verify(entries).first_problem
    assert problem is not None and problem.seq == 1 and "genesis" in problem.reason


def test_rehashed_entry_breaks_the_next_link() -> None:
    """Altering an entry and recomputing its own hash is caught at the next entry."""
    entries = make_chain(6)
    forged = with_field(entries[2], actor="mallory")
    entries[2] = with_field(forged, hash=entry_hash(forged.prev_hash, "main", 3, forged))
    problem = verify(entries).first_problem
    assert problem is not None and problem.seq == 4 and "does not link to entry 3" in problem.reason


def test_each_chain_is_checked_on_its_own() -> None:
    """Chains may interleave; a problem in one does not hide a problem in another."""
    a, b = make_chain(4, "a"), make_chain(4, "b")
    b[1] = with_field(b[1], kind="vote")
    del a[2]
    interleaved = [e for pair in zip(a, b, strict=False) for e in pair] + b[len(a) :]
    report = verify(interleaved, {**head_of(make_chain(4, "a")), **head_of(make_chain(4, "b"))})
    assert [(p.chain_id, p.seq) for p in report.problems] == [("b", 2), ("a", 3)]
    assert report.summary().startswith("TAMPERED: entry 2 of chain 'b' was altered")
    assert "1 more chain with problems" in report.summary()


def test_unencodable_entry_is_reported() -> None:
    """An entry holding a value that cannot be encoded is reported, not crashed on."""
    entries = make_chain(3)
    entries[1] = with_field(entries[1], data={"when": datetime(2025, 1, 1, tzinfo=UTC)})
    problem = verify(entries).first_problem
    assert problem is not None and problem.seq == 2 and "cannot be encoded" in problem.reason


def test_anchor_catches_a_rewritten_history() -> None:
    """A chain re-hashed from entry 2 on verifies alone, but not against a checkpoint."""
    original = make_chain(5)
    rewritten = chain([original[0].to_draft(), *[draft(i, actor="mallory") for i in range(1, 5)]])
    anchors = [Anchor("main", 3, original[2].hash, "checkpoint 1")]
    assert verify(rewritten, head_of(rewritten)).ok
    problem = verify(rewritten, head_of(rewritten), anchors).first_problem
    assert problem is not None and problem.seq == 3
    assert "does not match checkpoint 1" in problem.reason


def test_anchor_catches_entries_deleted_with_their_head() -> None:
    """Truncating a chain and its head together is caught by an older checkpoint."""
    original = make_chain(5)
    short = original[:2]
    anchors = [Anchor("main", 4, original[3].hash, "checkpoint 7")]
    problem = verify(short, head_of(short), anchors).first_problem
    assert problem is not None and problem.seq == 4 and "checkpoint 7" in problem.reason


FIELDS = [
    "kind", "ts", "actor", "approver", "channel", "action", "params_hash", "effect",
    "rule_ids", "policy_version", "approval_id", "data", "chain_id", "seq", "prev_hash", "hash",
]  # fmt: skip


def _changed(field: str, value: Any, pick: int) -> Any:
    """A value of the same field that is surely different from `value`."""
    if field == "ts":
        return value + timedelta(microseconds=1 + pick)
    if field == "seq":
        delta = pick % 7 - 3 or 4
        return value + delta
    if field == "rule_ids":
        return (*value, f"r{pick}")
    if field == "data":
        return {**value, f"extra{pick}": pick}
    if field in ("prev_hash", "hash"):
        at = pick % 64
        return value[:at] + ("0" if value[at] != "0" else "1") + value[at + 1 :]
    if value is None:
        return f"v{pick}"
    return value + "x" if pick % 2 else None if field not in ("kind", "chain_id") else "x" + value


@settings(max_examples=250, deadline=None)
@given(
    items=st.lists(drafts, min_size=1, max_size=6),
    index=st.integers(min_value=0),
    field=st.sampled_from(FIELDS),
    pick=st.integers(min_value=0, max_value=1000),
    with_heads=st.booleans(),
)
def test_any_single_field_change_is_detected(
    items: list[AuditDraft], index: int, field: str, pick: int, with_heads: bool
) -> None:
    """Changing any one field of any one entry of a valid chain is detected; except for a
    move to another chain or a renumbering, the report names that very entry."""
    entries = chain(items, "main")
    heads = head_of(entries)
    i = index % len(entries)
    before = getattr(entries[i], field)
    entries[i] = with_field(entries[i], **{field: _changed(field, before, pick)})
    report = verify(entries, heads if with_heads else None)
    assert not report.ok
    problem = report.first_problem
    assert problem is not None
    if field not in ("chain_id", "seq"):
        assert (problem.chain_id, problem.seq) == ("main", i + 1)
