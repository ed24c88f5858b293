"""The fhir.resources layer: R4B pydantic models catch what the JSON schema cannot (calendar dates such
as 2020-02-30, required elements, invariants the models encode).

Validation only: the model's output is discarded, the stored JSON is the client's (architecture rule 7).
Types whose R4B model is not R4's are checked by the R4 schema alone (``SCHEMA_ONLY``), and the
CapabilityStatement says so.
"""
from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from ..errors import Issue
from .schema import RESOURCE_TYPES, fhirpath

# R4 types that R4B removed (no model) or redefined (Evidence, EvidenceVariable: their R4 examples do not
# fit the R4B models). tests/resources/test_model.py checks the list against the installed fhir.resources.
SCHEMA_ONLY: frozenset[str] = frozenset({
    "EffectEvidenceSynthesis", "Evidence", "EvidenceVariable", "MedicinalProduct",
    "MedicinalProductAuthorization", "MedicinalProductContraindication", "MedicinalProductIndication",
    "MedicinalProductIngredient", "MedicinalProductInteraction", "MedicinalProductManufactured",
    "MedicinalProductPackaged", "MedicinalProductPharmaceutical", "MedicinalProductUndesirableEffect",
    "RiskEvidenceSynthesis", "SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein",
    "SubstanceReferenceInformation", "SubstanceSourceMaterial", "SubstanceSpecification",
})


@cache
def _model(rtype: str) -> Any:
    return None if rtype in SCHEMA_ONLY else get_fhir_model_class(rtype)


def _contains_schema_only(node: Any) -> bool:
    """True when a nested resource (contained, Bundle entry ...) is of a SCHEMA_ONLY type."""
    if isinstance(node, dict):
        kind = node.get("resourceType")
        if isinstance(kind, str) and kind in SCHEMA_ONLY:
            return True
        return any(_contains_schema_only(v) for v in node.values() if isinstance(v, (dict, list)))
    if isinstance(node, list):
        return any(_contains_schema_only(v) for v in node)
    return False


def model_issues(resource: dict[str, Any]) -> list[Issue]:
    rtype = resource["resourceType"]
    if rtype not in RESOURCE_TYPES or _model(rtype) is None or _contains_schema_only(resource):
        return []
    try:
        _model(rtype).model_validate(resource)
    except ValidationError as exc:
        issues = []
        for error in exc.errors():
            if error["type"] in {"extra_forbidden", "string_pattern_mismatch"}:
                # Element names and primitive patterns are the schema's call: the models refuse some
                # the spec allows (``_valueString`` in an Extension; a code holding a no-break space,
                # valid under FHIR's XML Schema regexes), and the schema already checks both.
                continue
            path = [p for p in error["loc"] if isinstance(p, (str, int))]
            code = "required" if error["type"] == "missing" else "value"
            issues.append(Issue(code, error["msg"], expression=(fhirpath(rtype, path),)))
        return issues
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # A model that trips over odd input must not turn bad input into a 500.
        return [Issue("invalid", f"the resource could not be checked: {exc}", expression=(rtype,))]
    return []
