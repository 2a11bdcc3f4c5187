"""The gateway's production router: experiments decide the version, the registry says
how to serve it, and one model pool shares base weights between versions.

>>> router = RegistryRouter(db, LocalModelPool())          # doctest: +SKIP
>>> create_app(db=db, router=router)                       # doctest: +SKIP
"""
from __future__ import annotations

import threading
from typing import Any

from tuneloop.errors import NotFoundError
from tuneloop.experiments.router import ExperimentRouter
from tuneloop.models.base import ModelBackend
from tuneloop.registry.versions import Registry
from tuneloop.server.gateway import Route
from tuneloop.store import Database


class RegistryRouter:
    """Implements the gateway's ``Router`` protocol over the store."""

    def __init__(self, db: Database, pool: Any, *, ttl_s: float = 2.0, seed: int | None = None,
                 default: ModelBackend | None = None, batch_local: bool = False) -> None:
        # batch_local is opt-in: it pays off for a model whose forward pass dominates (SmolLM2:
        # ~2.5x the requests/s), not for the tiny test model. The "10x slower" seen earlier was
        # libgomp's spinning threads on shared cores, fixed by OMP_WAIT_POLICY=PASSIVE (tuneloop/__init__).
        self.db, self.pool, self.default, self.batch_local = db, pool, default, batch_local
        self.experiments = ExperimentRouter(db, ttl_s=ttl_s, seed=seed)
        self.registry = Registry(db)
        self._backends: dict[str, ModelBackend] = {}
        self._lock = threading.Lock()

    def backend(self, version_id: str) -> ModelBackend:
        """The (cached) backend of one registered version."""
        backend = self._backends.get(version_id)
        if backend is None:
            from tuneloop.models.factory import backend_for_version

            with self._lock:
                backend = self._backends.get(version_id)
                if backend is None:
                    row = self.registry.get(version_id).to_dict()
                    backend = backend_for_version(row, self.pool)
                    if row.get("backend") == "local" and self.batch_local:  # concurrent requests share a forward pass
                        from tuneloop.models.batching import MicroBatcher

                        backend = MicroBatcher(backend)
                    self._backends[version_id] = backend
        return backend

    def route(self, request_model: str, user: str | None) -> Route:
        r = self.experiments.route(request_model, user)
        if r.version_id is None:
            if self.default is None:
                raise NotFoundError(f"no version serves model {request_model!r}: register and promote a champion first")
            return Route("default", self.default)
        shadow = (r.shadow_version_id, self.backend(r.shadow_version_id)) if r.shadow_version_id else None
        return Route(r.version_id, self.backend(r.version_id), r.experiment_id, r.arm, shadow)

    def models(self) -> list[str]:
        names = ["tuneloop", "champion", "challenger"]
        names += [v.id for v in self.registry.list()]
        return names

    def invalidate(self) -> None:
        self.experiments.invalidate()
