"""A black-box FHIR R4 conformance suite: see README.md."""
