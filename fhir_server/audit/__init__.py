"""The audit trail: IHE BALP AuditEvents for every access (builders in balp.py, pure)."""
