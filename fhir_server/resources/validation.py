"""Validation on every write: the official R4 JSON schema, then the fhir.resources model, then the
agreement of the resource with the URL (400, every finding in one OperationOutcome); then the DMP
profiles the resource claims (422: valid FHIR that breaks the profile's rules).
"""
from __future__ import annotations

from typing import Any

from ..errors import Issue, InvalidResource, Unprocessable
from .model import model_issues
from .parse import ID_RE
from .profiles import profile_issues
from .schema import RESOURCE_TYPES, schema_issues


def resource_issues(resource: dict[str, Any], rtype: str | None = None, rid: str | None = None) -> list[Issue]:
    """Every problem with ``resource``; ``rtype``/``rid`` are what the URL says (when it says)."""
    found = resource.get("resourceType")
    if found not in RESOURCE_TYPES:
        return [Issue("not-supported", f"unknown resource type '{found}'", expression=("resourceType",))]
    issues: list[Issue] = []
    if rtype is not None and found != rtype:
        issues.append(Issue("invalid", f"resourceType '{found}' does not match the URL's '{rtype}'",
                            expression=(f"{found}.resourceType",)))
    if rid is not None:
        if "id" not in resource:
            issues.append(Issue("required", "an update must carry the resource id", expression=(f"{found}.id",)))
        elif resource["id"] != rid:
            issues.append(Issue("invalid", f"id '{resource['id']}' does not match the URL's '{rid}'",
                                expression=(f"{found}.id",)))
    schema = schema_issues(resource)
    seen = {i.expression for i in schema}
    issues += schema + [i for i in model_issues(resource) if i.expression not in seen]
    return issues


def validate(resource: dict[str, Any], rtype: str | None = None, rid: str | None = None) -> None:
    issues = resource_issues(resource, rtype, rid)
    if issues:
        raise InvalidResource(issues[0].diagnostics, issues=issues)
    issues = profile_issues(resource)
    if issues:
        raise Unprocessable(issues[0].diagnostics, issues=issues)


__all__ = ["ID_RE", "resource_issues", "validate"]
