"""Request routing for the gateway: which version answers, in which experiment and arm.

>>> from tuneloop.store import Database
>>> from tuneloop.registry import Registry
>>> db = Database.open("sqlite:///:memory:")
>>> reg = Registry(db); _ = reg.register("v1", backend="scripted"); _ = reg.promote("v1")
>>> router = ExperimentRouter(db)
>>> router.route("tuneloop", user="alice")
Route(version_id='v1', experiment_id=None, arm=None, shadow_version_id=None)

How a request's ``model`` field is read:

- an alias name (``champion``, ``challenger``, ``shadow``, ``retriever:champion``) or a
  registered version id: that version, outside any experiment;
- a name a running experiment is scoped to (``config["model"]``): that experiment;
- anything else (``tuneloop``, ``default``, the app's own model name): the running
  unscoped experiment if there is one, else the champion (plus the ``shadow`` alias, if set,
  answering in the background).

``version_id`` is None when nothing is registered: the gateway then uses its default
backend. The router reads the store at most once per ``ttl_s`` (one thread refreshes while
the others keep the previous snapshot), so the hot path makes no database query; if a
refresh fails the last good snapshot keeps serving.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import sqlalchemy as sa

from tuneloop.experiments import records
from tuneloop.experiments.assignment import Assigner, Assignment
from tuneloop.store import Database, schema

__all__ = ["ExperimentRouter", "Route"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes. ``arm`` is ``control``/``treatment`` inside an experiment; the
    gateway logs the background answer of ``shadow_version_id`` with arm ``shadow``."""

    version_id: str | None
    experiment_id: str | None = None
    arm: str | None = None
    shadow_version_id: str | None = None


class _Routed:
    """One running experiment: its assigner and the Route of each of its few assignments."""

    __slots__ = ("experiment_id", "assigner", "routes")

    def __init__(self, experiment_id: str, assigner: Assigner) -> None:
        self.experiment_id, self.assigner = experiment_id, assigner
        self.routes: dict[Assignment, Route] = {}

    def route(self, user: str | None) -> Route:
        a = self.assigner.assign(user)
        r = self.routes.get(a)
        if r is None:
            r = self.routes[a] = Route(a.version_id, self.experiment_id, a.arm, a.shadow_version_id)
        return r


@dataclass(frozen=True)
class _Snapshot:
    direct: dict[str, Route]          # alias names and version ids
    scoped: dict[str, _Routed]
    default: _Routed | None
    fallback: Route                   # champion (+ shadow alias)
    loaded_at: float


class ExperimentRouter:
    """Routes requests by the store's running experiments and aliases, cached ``ttl_s`` seconds."""

    def __init__(self, db: Database, *, ttl_s: float = 2.0, seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db, self.ttl_s, self.seed, self._clock = db, ttl_s, seed, clock
        self._snap: _Snapshot | None = None
        self._lock = threading.Lock()

    def route(self, request_model: str | None = None, user: str | None = None) -> Route:
        """The :class:`Route` of one request (``user`` keeps assignment sticky)."""
        snap = self._snap
        if snap is None or self._clock() - snap.loaded_at > self.ttl_s:
            snap = self._refresh()
        name = request_model or ""
        direct = snap.direct.get(name)
        if direct is not None:
            return direct
        routed = snap.scoped.get(name) or snap.default
        return routed.route(user) if routed is not None else snap.fallback

    def invalidate(self) -> None:
        """Forget the snapshot: the next request reads the store (after a deploy or promotion)."""
        self._snap = None

    def _refresh(self) -> _Snapshot:
        if not self._lock.acquire(blocking=self._snap is None):
            return self._snap  # another thread is refreshing; serve the previous snapshot
        try:
            self._snap = self._load()
        except Exception:  # the store is down: keep serving what we had
            if self._snap is None:
                raise
            log.warning("experiment router: refresh failed, keeping the previous snapshot", exc_info=True)
            self._snap = replace(self._snap, loaded_at=self._clock())
        finally:
            self._lock.release()
        return self._snap

    def _load(self) -> _Snapshot:
        aliases = {r["name"]: r["version_id"] for r in
                   self.db.fetch_all(sa.select(schema.aliases.c.name, schema.aliases.c.version_id))}
        versions = [r["id"] for r in self.db.fetch_all(sa.select(schema.model_versions.c.id))]
        direct = {v: Route(v) for v in versions}
        direct.update({name: Route(vid) for name, vid in aliases.items()})
        scoped: dict[str, _Routed] = {}
        default = None
        for exp in reversed(records.running(self.db)):  # oldest first: the newest wins a tie
            routed = _Routed(exp.id, exp.assigner(seed=self.seed))
            if exp.scope:
                scoped[exp.scope] = routed
            else:
                default = routed
        fallback = Route(aliases.get("champion"), None, None, aliases.get("shadow"))
        return _Snapshot(direct, scoped, default, fallback, self._clock())
