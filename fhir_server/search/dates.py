"""FHIR date, dateTime and instant values as UTC ranges (https://hl7.org/fhir/R4/search.html#date).

A value stands for the whole period its precision implies: ``2020`` is [2020-01-01, 2021-01-01).
Values without a time zone are taken as UTC.
"""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from ..errors import BadRequest

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})(T(?P<H>\d{2}):(?P<M>\d{2})(:(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def _tz(value: str | None) -> tzinfo:
    if value is None or value == "Z":
        return UTC
    sign = 1 if value[0] == "+" else -1
    return timezone(sign * timedelta(hours=int(value[1:3]), minutes=int(value[4:6])))


def _add_months(start: datetime, months: int) -> datetime:
    month = start.month - 1 + months
    return start.replace(year=start.year + month // 12, month=month % 12 + 1)


def parse_period(value: str) -> tuple[datetime, datetime]:
    """``value`` as the half-open UTC range [start, end) its precision implies."""
    match = _DATE_RE.match(value.strip())
    if not match:
        raise BadRequest(f"'{value}' is not a valid FHIR date, dateTime or instant")
    g = match.groupdict()
    try:
        tz = _tz(g["tz"])
        start = datetime(int(g["y"]), int(g["m"] or 1), int(g["d"] or 1), int(g["H"] or 0), int(g["M"] or 0),
                         int(g["S"] or 0), int(float(g["f"] or 0) * 1_000_000), tzinfo=tz)
    except ValueError:
        raise BadRequest(f"'{value}' is not a valid date") from None
    if g["f"]:  # precision implied by the digits: .1 is a tenth of a second wide
        end = start + timedelta(microseconds=10 ** max(0, 7 - len(g["f"])))
    elif g["S"]:
        end = start + timedelta(seconds=1)
    elif g["M"]:
        end = start + timedelta(minutes=1)
    elif g["d"]:
        end = start + timedelta(days=1)
    elif g["m"]:
        end = _add_months(start, 1)
    else:
        end = start.replace(year=start.year + 1)
    return start.astimezone(UTC), end.astimezone(UTC)


def parse_instant(value: str) -> datetime:
    """The start of ``value``'s period: ``_since=2020-03-04`` means from that day's start."""
    return parse_period(value)[0]
