from __future__ import annotations

import pytest

from fhir_server.errors import BadRequest
from fhir_server.search.paging import decode_cursor, encode_cursor


def test_a_cursor_round_trips() -> None:
    token = encode_cursor("s3cret", ["2026-01-01T00:00:00+00:00", "Patient/x/1"])
    assert decode_cursor("s3cret", token) == ["2026-01-01T00:00:00+00:00", "Patient/x/1"]


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # edited signature
    lambda t: "A" + t[1:] if t[0] != "A" else "B" + t[1:],  # edited payload
    lambda t: "",
    lambda t: "!!!",
])
def test_a_forged_or_edited_cursor_is_refused(mangle: object) -> None:
    token = encode_cursor("s3cret", [5])
    with pytest.raises(BadRequest):
        decode_cursor("s3cret", mangle(token))  # type: ignore[operator]


def test_a_cursor_signed_with_another_secret_is_refused() -> None:
    with pytest.raises(BadRequest):
        decode_cursor("other", encode_cursor("s3cret", [5]))
