"""SMART on FHIR: the authorization server, access tokens, scopes and what they allow."""
