"""The policy decision point: the patient's Consent resources and the DMP rules (DMP.md, "Who may see
what") -> a clause narrowing every query, and a decision for every resource. Pure: no IO."""
