"""FHIR search with no IO: parameter values, paging cursors (the search engine joins with the Search issue)."""
