from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhir_server.errors import BadRequest
from fhir_server.search.dates import parse_instant, parse_period


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize("value,start,end", [
    ("2020", _utc(2020, 1, 1), _utc(2021, 1, 1)),
    ("2020-12", _utc(2020, 12, 1), _utc(2021, 1, 1)),
    ("2020-02", _utc(2020, 2, 1), _utc(2020, 3, 1)),
    ("2020-03-04", _utc(2020, 3, 4), _utc(2020, 3, 5)),
    ("2020-03-04T10:00+01:00", _utc(2020, 3, 4, 9), _utc(2020, 3, 4, 9, 1)),
    ("2020-03-04T10:00:30Z", _utc(2020, 3, 4, 10, 0, 30), _utc(2020, 3, 4, 10, 0, 31)),
    ("2020-03-04T10:00:30.5Z", _utc(2020, 3, 4, 10, 0, 30, 500000), _utc(2020, 3, 4, 10, 0, 30, 600000)),
    ("2020-03-04T10:00:30.123-02:00", _utc(2020, 3, 4, 12, 0, 30, 123000), _utc(2020, 3, 4, 12, 0, 30, 124000)),
])
def test_a_value_is_the_period_its_precision_implies(value: str, start: datetime, end: datetime) -> None:
    assert parse_period(value) == (start, end)
    assert parse_instant(value) == start


@pytest.mark.parametrize("value", ["", "yesterday", "2020-13", "2020-02-30", "20200304", "2020-03-04T25:00Z", "2020-3-4"])
def test_invalid_values_are_bad_requests(value: str) -> None:
    with pytest.raises(BadRequest):
        parse_period(value)
