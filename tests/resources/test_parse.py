from __future__ import annotations

import pytest

from fhir_server.errors import BadRequest
from fhir_server.resources.parse import check_id, parse_resource


@pytest.mark.parametrize("body", [
    b"", b"{", b"[]", b"1", b'"x"', b"null", b'{"a": 1}', b'{"resourceType": 5}',
    b'{"resourceType":"Patient","\xff":1}',
    b'{"resourceType":"Patient","$gt":1}', b'{"resourceType":"Patient","a.b":1}',
    b'{"resourceType":"Patient","x":[{"$ne":1}]}',
    b'{"resourceType":"Patient","x":' + b"[" * 200 + b"]" * 200 + b"}",
])
def test_unacceptable_bodies(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_resource(body, max_depth=100)


def test_depth_limit_counts_levels() -> None:
    body = b'{"resourceType":"Patient","x":' + b"[" * 8 + b"]" * 8 + b"}"
    assert parse_resource(body, max_depth=9)["resourceType"] == "Patient"
    with pytest.raises(BadRequest):
        parse_resource(body, max_depth=8)


@pytest.mark.parametrize("value", ["a", "A-1.b", "x" * 64])
def test_valid_ids(value: str) -> None:
    assert check_id(value) == value


@pytest.mark.parametrize("value", ["", "a_b", "a b", "x" * 65, "é", "a/b"])
def test_invalid_ids(value: str) -> None:
    with pytest.raises(BadRequest):
        check_id(value)


def test_decimals_keep_their_precision() -> None:
    from decimal import Decimal

    from fhir_server.resources.jsonio import dumps
    resource = parse_resource(b'{"resourceType":"Observation","valueQuantity":{"value":1.50},"x":[2.0]}', 10)
    assert resource["valueQuantity"]["value"] == Decimal("1.50")
    assert dumps(resource) == b'{"resourceType":"Observation","valueQuantity":{"value":1.50},"x":[2.0]}'
    assert parse_resource(b'{"resourceType":"Patient","multipleBirthInteger":2}', 10)["multipleBirthInteger"] == 2
