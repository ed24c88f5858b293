"""FHIR knowledge with no IO: resource types, parsing, validation, element filters."""
