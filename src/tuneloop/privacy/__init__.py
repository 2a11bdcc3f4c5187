"""Privacy: PII scrubbing (used by capture and datasets), consent, right to delete with
lineage taint, retention, the append-only audit log.

>>> from tuneloop.privacy import delete_user, set_consent, enforce_retention   # doctest: +SKIP

Names load lazily: ``tuneloop.privacy.pii`` is imported on the capture hot path and
must not pull in the rest.
"""
from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tuneloop.privacy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
