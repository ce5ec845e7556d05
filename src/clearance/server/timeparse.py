"""Reading `--since` / `?since=` values: ISO 8601 dates and times, always in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

from .errors import HTTPProblem


def parse_when(value: str, zone: tzinfo = UTC) -> datetime:
    """`2026-11-24`, `2026-11-24T14:02`, `2026-11-24T14:02:00+01:00` → an aware UTC datetime.
    A value without a zone (a date means its 00:00) is read in `zone`.

    Raises ValueError with a plain message.
    """
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a date or time; write e.g. 2026-11-24 or 2026-11-24T14:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def parse_time(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_when(value)
    except ValueError as exc:
        raise HTTPProblem(400, "invalid_time", f"{name}: {exc}") from None
