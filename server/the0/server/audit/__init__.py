"""The audit trail: security-relevant events, appended in the transaction of the change they record.

``trail.AuditTrail.record`` stages a row; ``repository.AuditRepository`` pages through them.
The table is append-only in the database itself (migration 0630_audit_events). This package
sits below the domains: it knows actors and user ids, never a domain model.
"""
