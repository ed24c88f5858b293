"""Test data: one official R4 example per resource type (the npm package hl7.fhir.r4.examples, unpacked
in .cache/spec/examples/package), made acceptable to any server, and the instances the suite created.

An example is stripped of its id and meta (the server assigns them), tagged with this run's tag, and its
references to other resources are pointed at the plain Patient, Practitioner and Organization the suite
created, or else removed (a server may refuse references it cannot resolve: http.html#create allows it,
and the examples' targets do not exist on the server under test)."""
from __future__ import annotations

import base64
import binascii
import copy
import itertools
import json
import re
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import requests

from .support import describe, json_body

EXAMPLES = Path(__file__).resolve().parent.parent / ".cache" / "spec" / "examples" / "package"
TAG_SYSTEM = "http://example.org/fhir/conformance-run"
RUN = uuid.uuid4().hex[:12]  # tags this run's resources, and makes its identifiers unique
REFERENCE = re.compile(r"^(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")

# Written by hand, as small as R4 allows: the targets of the examples' references. A server under test
# must accept these (the requirement: a plain Patient, Practitioner, Organization, Observation).
PLAIN: dict[str, dict[str, Any]] = {
    "Patient": {"resourceType": "Patient", "name": [{"family": "Conformance", "given": ["Alice"]}],
                "gender": "female", "birthDate": "1970-01-01"},
    "Practitioner": {"resourceType": "Practitioner", "name": [{"family": "Conformance", "given": ["Bob"]}]},
    "Organization": {"resourceType": "Organization", "name": "Conformance test organization"},
}
PLAIN_OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation", "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
    "valueQuantity": {"value": 70, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
}


@cache
def example_file(rtype: str) -> Path | None:
    """``{type}-example.json`` when the package has it, else the smallest example of the type."""
    preferred = EXAMPLES / f"{rtype}-example.json"
    if preferred.exists():
        return preferred
    candidates = sorted(EXAMPLES.glob(f"{rtype}-*.json"), key=lambda p: (p.stat().st_size, p.name))
    for path in candidates:
        if json.loads(path.read_text()).get("resourceType") == rtype:
            return path
    return None


def tagged(resource: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(resource)
    out.pop("id", None)
    out["meta"] = {"tag": [{"system": TAG_SYSTEM, "code": RUN}]}
    return out


def prepare(example: dict[str, Any], targets: dict[str, str]) -> dict[str, Any]:
    """The example without id/meta, tagged, its references re-pointed (``targets``: type -> our id)."""
    out = tagged(example)

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        if isinstance(node.get("reference"), str) and not node["reference"].startswith("#"):
            match = REFERENCE.match(node["reference"])
            ref = dict(node)
            if match and match.group(1) in targets:
                ref["reference"] = f"{match.group(1)}/{targets[match.group(1)]}"
            else:
                del ref["reference"]
                ref.setdefault("display", "reference removed by the conformance suite")
            return {key: walk(value) if key != "reference" else value for key, value in ref.items()}
        if node.get("resourceType") and node is not out:
            node = {k: v for k, v in node.items() if k != "meta"}  # a contained or entry resource
        return {key: walk(value) for key, value in node.items()}

    return walk(out)


@dataclass
class Created:
    """A resource the suite created: the create answer, and the resource as read back afterwards."""
    rtype: str
    id: str
    response: requests.Response
    sent: dict[str, Any]
    stored: dict[str, Any] = field(default_factory=dict)


class Instances:
    """The resources the suite creates, once each per session, on demand."""

    def __init__(self, http: requests.Session, base_url: str, creatable: set[str]) -> None:
        self.http, self.base_url, self.creatable = http, base_url, creatable
        self._plain: dict[str, Created] = {}
        self._examples: dict[str, Created | str] = {}

    def create(self, resource: dict[str, Any]) -> requests.Response:
        return self.http.post(f"{self.base_url}/{resource['resourceType']}", json=resource,
                              headers={"Content-Type": "application/fhir+json"}, timeout=120)

    def created(self, resource: dict[str, Any], response: requests.Response, read: bool = True) -> Created:
        """The id from the Location header (http.html#create: SHALL be returned), else from the body,
        and the resource as stored: the body when the server returned it, else read back."""
        rtype = resource["resourceType"]
        location = response.headers.get("Location", "")
        match = re.search(rf"{rtype}/([A-Za-z0-9\-.]{{1,64}})", location)
        body = json_body(response)
        body = body if isinstance(body, dict) and body.get("resourceType") == rtype else None
        rid = match.group(1) if match else (body or {}).get("id")
        assert rid, f"created, but neither Location nor body says the id: {describe(response)}"
        if body is None and read:
            answer = self.http.get(f"{self.base_url}/{rtype}/{rid}", timeout=60)
            assert answer.status_code == 200, f"created, then not readable: {describe(answer)}"
            body = answer.json()
        return Created(rtype, str(rid), response, resource, body or {})

    def plain(self, rtype: str) -> Created:
        """The hand-written Patient, Practitioner or Organization (or Observation): must be accepted."""
        if rtype not in self._plain:
            self._plain[rtype] = self.new_plain(rtype)
        return self._plain[rtype]

    def new_plain(self, rtype: str) -> Created:
        resource = tagged(PLAIN_OBSERVATION if rtype == "Observation" else PLAIN[rtype])
        if rtype == "Observation" and "Patient" in self.creatable:
            resource["subject"] = {"reference": f"Patient/{self.plain('Patient').id}"}
        response = self.create(resource)
        assert response.status_code == 201, f"a plain {rtype} was refused: {describe(response)}"
        return self.created(resource, response)

    def targets(self) -> dict[str, str]:
        return {rtype: self.plain(rtype).id for rtype in PLAIN if rtype in self.creatable}

    def example(self, rtype: str) -> dict[str, Any] | None:
        """The prepared example, with a canonical identity of its own (``distinct``)."""
        path = example_file(rtype)
        return distinct(prepare(json.loads(path.read_text()), self.targets())) if path else None

    def of(self, rtype: str) -> Created:
        """The official example of ``rtype`` created on the server; skips the test when there is no
        example or the server refused it with a 4xx (a server may: profiles, business rules)."""
        if rtype not in self._examples:
            resource = self.example(rtype)
            if resource is None:
                self._examples[rtype] = "not testable: the R4 examples package has no example of this type"
            else:
                response = self.create(resource)
                if 400 <= response.status_code < 500:
                    self._examples[rtype] = ("not testable: the server refused the example "
                                             f"({response.status_code}: {refusal(response)})")
                else:
                    assert response.status_code == 201, f"creating the {rtype} example: {describe(response)}"
                    self._examples[rtype] = self.created(resource, response)
        found = self._examples[rtype]
        if isinstance(found, str):
            pytest.skip(found)
        return found

    def create_all(self, rtypes: list[str], workers: int = 4) -> None:
        """Creates the examples of many types a few at a time (to keep the run short); each test then
        finds its own with ``of``, skipped or not as it would have been."""
        from concurrent.futures import ThreadPoolExecutor

        self.targets()  # the shared targets first, once

        def one(rtype: str) -> None:
            try:
                self.of(rtype)
            except (Exception, pytest.skip.Exception):
                pass  # the type's own test meets the same answer again, and reports it
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, [t for t in rtypes if t not in self._examples]))

    def fresh(self, rtype: str) -> Created:
        """Another instance of the example, for a test that deletes it."""
        self.of(rtype)  # skips as it does
        resource = self.example(rtype)
        assert resource is not None
        response = self.create(resource)
        assert response.status_code == 201, f"creating a second {rtype}: {describe(response)}"
        return self.created(resource, response, read=False)

    def current(self, created: Created) -> dict[str, Any]:
        read = self.http.get(f"{self.base_url}/{created.rtype}/{created.id}", timeout=60)
        assert read.status_code == 200, describe(read)
        body: dict[str, Any] = read.json()
        return body


_copies = itertools.count(1)


def distinct(resource: dict[str, Any]) -> dict[str, Any]:
    """Each copy of an example gets its own canonical ``url`` (and a SearchParameter its own ``code``;
    its ``base`` stays), unique in this run: a server may refuse a second resource with the same
    canonical url and version, or a SearchParameter overlapping another (a business rule, 422:
    http.html#create), and running the suite twice against one server would otherwise meet its own
    earlier examples. Nothing the suite checks depends on the example's original url."""
    n = next(_copies)
    url = resource.get("url")
    if isinstance(url, str) and url.startswith("urn:"):
        resource["url"] = f"urn:uuid:{uuid.uuid4()}"  # a urn:uuid or urn:oid admits no suffix
    elif isinstance(url, str):
        resource["url"] = f"{url.rstrip('/')}-{RUN}-{n}"
    if resource.get("resourceType") == "SearchParameter" and isinstance(resource.get("code"), str):
        resource["code"] = f"{resource['code']}-{RUN}-{n}"
    return resource


# -- values, not lexical forms: base64Binary ------------------------------------------------------------

@cache
def _element_types(tname: str) -> dict[str, list[str] | str]:
    """A type's elements from its StructureDefinition snapshot: path -> type codes, or the path a
    ``contentReference`` points at (e.g. Questionnaire.item.item -> Questionnaire.item)."""
    path = EXAMPLES / f"StructureDefinition-{tname}.json"
    if not path.exists():
        return {}
    out: dict[str, list[str] | str] = {}
    for element in (json.loads(path.read_text()).get("snapshot") or {}).get("element") or ():
        if element.get("contentReference"):
            out[element["path"]] = element["contentReference"].lstrip("#")
        else:
            out[element["path"]] = [t.get("code", "") for t in element.get("type") or ()]
    return out


def _child_type(tname: str, path: str) -> tuple[str, list[str] | str] | None:
    """(element path as defined, its types) of ``path``, a JSON property in type ``tname``; a choice
    element's property (valueBase64Binary) names its type."""
    elements = _element_types(tname)
    if path in elements:
        return path, elements[path]
    parent, _, key = path.rpartition(".")
    for defined, types in elements.items():
        stem = defined[:-3].rpartition(".")[2]
        if defined.endswith("[x]") and defined.rpartition(".")[0] == parent and key.startswith(stem) and not isinstance(types, str):
            wanted = key[len(stem):].lower()
            return defined, [t for t in types if t.lower() == wanted]
    return None


def _decoded(text: str) -> Any:
    """base64Binary's value is the bytes: its lexical form allows whitespace anywhere
    (datatypes.html#primitive: base64Binary, regex ``(\\s*([0-9a-zA-Z\\+/=]){4}\\s*)+``)."""
    try:
        return ("base64Binary", base64.b64decode("".join(text.split()), validate=True))
    except (binascii.Error, ValueError):
        return text  # not base64: compared as sent


def comparable(node: Any, tname: str = "", path: str = "") -> Any:
    """The resource with each base64Binary value decoded (found by walking the R4 StructureDefinitions),
    so that two representations of the same value compare equal."""
    if isinstance(node, list):
        return [comparable(item, tname, path) for item in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("resourceType"), str):
        tname = path = node["resourceType"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        found = _child_type(tname, f"{path}.{key}") if tname else None
        if found is None:
            out[key] = value
            continue
        defined, types = found
        if isinstance(types, str):  # contentReference: the same structure as the element it names
            out[key] = comparable(value, tname, types)
        elif types == ["base64Binary"]:
            out[key] = [_decoded(v) if isinstance(v, str) else v for v in value] if isinstance(value, list) \
                else _decoded(value) if isinstance(value, str) else value
        elif len(types) == 1 and types[0] in ("BackboneElement", "Element"):
            out[key] = comparable(value, tname, defined)
        elif len(types) == 1 and types[0][:1].isupper() and types[0] != "Resource":
            out[key] = comparable(value, types[0], types[0])
        else:
            out[key] = comparable(value)  # a contained Resource names its own type; primitives stay
    return out


def refusal(response: requests.Response) -> str:
    """What an OperationOutcome says, in one line."""
    body = json_body(response)
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        texts = [str(i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code"))
                 for i in body.get("issue") or ()]
        return "; ".join(texts)[:300]
    return response.text[:300]
