"""Privacy: PII scrubbing (used by capture and datasets), consent, right to delete with
lineage taint, retention, the append-only audit log.

>>> from tuneloop.privacy import delete_user, set_consent, enforce_retention   # doctest: +SKIP

Names load lazily: ``tuneloop.privacy.pii`` is imported on the capture hot path and
must not pull in the rest.
"""
from __future__ import annotations

from tuneloop._lazy import lazy_exports

_EXPORTS = {
    "Scrubber": "tuneloop.privacy.pii",
    "scrub": "tuneloop.privacy.pii",
    "Subject": "tuneloop.privacy.consent",
    "get_subject": "tuneloop.privacy.consent",
    "set_consent": "tuneloop.privacy.consent",
    "has_training_consent": "tuneloop.privacy.consent",
    "is_deleted": "tuneloop.privacy.consent",
    "deleted_users": "tuneloop.privacy.consent",
    "DeletionReport": "tuneloop.privacy.deletion",
    "delete_user": "tuneloop.privacy.deletion",
    "purge_subject_rows": "tuneloop.privacy.deletion",
    "RetentionReport": "tuneloop.privacy.retention",
    "enforce_retention": "tuneloop.privacy.retention",
    "AuditEntry": "tuneloop.privacy.audit",
    "list_audit": "tuneloop.privacy.audit",
    "PiiPolicy": "tuneloop.privacy.pii_ingest",
    "IngestGuard": "tuneloop.privacy.pii_ingest",
    "policy_from_settings": "tuneloop.privacy.pii_ingest",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports('tuneloop.privacy', _EXPORTS, globals())
