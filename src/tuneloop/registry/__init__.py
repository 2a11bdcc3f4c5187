"""Model registry: versions with lineage, aliases (champion, challenger, shadow), promotion, rollback."""
from tuneloop.registry.versions import KINDS, STATUSES, Alias, ModelVersion, Registry, alias_for

__all__ = ["Alias", "KINDS", "ModelVersion", "Registry", "STATUSES", "alias_for"]
