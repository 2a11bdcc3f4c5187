"""Experiment rows: create, read, update state and close them, each change audited.

>>> from tuneloop.store import Database
>>> from tuneloop.registry import Registry
>>> db = Database.open("sqlite:///:memory:")
>>> reg = Registry(db)
>>> _ = reg.register("v1", backend="scripted"); _ = reg.register("v2", backend="scripted")
>>> exp = create(db, "v1", "v2", mode="ab", weights={"control": 0.5, "treatment": 0.5}, config={})
>>> get(db, exp.id).status, exp.assigner().assign("u1").arm in ("control", "treatment")
('running', True)
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import ConflictError, NotFoundError
from tuneloop.experiments.assignment import Assigner, make_assigner
from tuneloop.ids import new_id, now
from tuneloop.registry.versions import jsonable, write_audit
from tuneloop.store import Database, schema

__all__ = ["Experiment", "create", "finish", "get", "latest", "list_experiments", "running", "save"]

_ex = schema.experiments
STATUSES = ("running", "promoted", "rolled_back", "stopped")


@dataclass(frozen=True)
class Experiment:
    """One experiment row. ``weights`` are the planned arm shares, ``state`` the canary step,
    bandit posteriors and sequential-test memory, ``decision`` the latest decision."""

    id: str
    name: str | None
    mode: str
    control_id: str
    treatment_id: str
    weights: dict
    salt: str
    status: str
    config: dict
    state: dict
    decision: dict | None
    started_at: float
    ended_at: float | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Experiment":
        d = {f.name: row[f.name] for f in fields(cls)}
        d["weights"], d["config"], d["state"] = d["weights"] or {}, d["config"] or {}, d["state"] or {}
        return cls(**d)

    @property
    def treatment_arm(self) -> str:
        """The arm name the challenger's interactions carry: ``shadow`` in shadow mode."""
        return "shadow" if self.mode == "shadow" else "treatment"

    @property
    def treatment_weight(self) -> float:
        return float(self.weights.get(self.treatment_arm, 0.0))

    @property
    def scope(self) -> str | None:
        """The request model name this experiment is limited to (None: the default route)."""
        return self.config.get("model")

    def assigner(self, seed: int | None = None) -> Assigner:
        """The assigner that routes this experiment's traffic in its current state."""
        return make_assigner(self.mode, self.control_id, self.treatment_id, salt=self.salt,
                             treatment_weight=self.treatment_weight,
                             shadow_rate=float(self.weights.get("shadow", 1.0)),
                             posteriors=self.state.get("bandit"),
                             exploration_floor=float(self.config.get("exploration_floor", 0.05)), seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def create(db: Database, control_id: str, treatment_id: str, *, mode: str, weights: Mapping[str, float],
           config: Mapping[str, Any], state: Mapping[str, Any] | None = None, name: str | None = None,
           salt: str | None = None, actor: str = "system") -> Experiment:
    """Insert a running experiment; ConflictError if one is already running on the same route.

    ``salt`` seeds the assignment hash (default: a fresh id, so experiments are independent);
    reuse a salt to give users the same buckets as an earlier experiment.
    """
    scope = config.get("model")
    row = {"id": new_id(), "name": name, "mode": mode, "control_id": control_id, "treatment_id": treatment_id,
           "weights": jsonable(dict(weights)), "salt": salt or new_id(), "status": "running",
           "config": jsonable(dict(config)), "state": jsonable(dict(state or {})), "decision": None,
           "started_at": now(), "ended_at": None}
    with db.begin() as conn:
        for other in conn.execute(sa.select(_ex).where(_ex.c.status == "running")):
            if (other.config or {}).get("model") == scope:
                raise ConflictError(f"experiment {other.id} ({other.control_id} vs {other.treatment_id}) is "
                                    "already running on this route: stop, promote or roll it back first",
                                    experiment_id=other.id)
        conn.execute(_ex.insert().values(**row))
        write_audit(conn, actor, "experiment_start", f"experiment:{row['id']}", None,
                    {k: row[k] for k in ("mode", "control_id", "treatment_id", "weights", "config")})
    return Experiment.from_row(row)


def get(db: Database, experiment_id: str) -> Experiment:
    row = db.fetch_one(sa.select(_ex).where(_ex.c.id == experiment_id))
    if row is None:
        raise NotFoundError(f"experiment {experiment_id!r} does not exist", experiment_id=experiment_id)
    return Experiment.from_row(row)


def running(db: Database) -> list[Experiment]:
    """Running experiments, newest first."""
    stmt = sa.select(_ex).where(_ex.c.status == "running").order_by(_ex.c.started_at.desc())
    return [Experiment.from_row(r) for r in db.fetch_all(stmt)]


def latest(db: Database, scope: str | None = None) -> Experiment | None:
    """The newest experiment (any status) on the route ``scope``."""
    for r in db.fetch_all(sa.select(_ex).order_by(_ex.c.started_at.desc()).limit(50)):
        if (r["config"] or {}).get("model") == scope:
            return Experiment.from_row(r)
    return None


def list_experiments(db: Database, status: str | None = None, limit: int = 50) -> list[Experiment]:
    stmt = sa.select(_ex).order_by(_ex.c.started_at.desc()).limit(limit)
    if status:
        stmt = stmt.where(_ex.c.status == status)
    return [Experiment.from_row(r) for r in db.fetch_all(stmt)]


def save(db: Database, exp: Experiment, *, state: Mapping | None = None, weights: Mapping | None = None,
         decision: Mapping | None = None, actor: str = "system", audit_action: str | None = None) -> Experiment:
    """Update a running experiment's state / weights / latest decision (audited when ``audit_action``)."""
    values: dict[str, Any] = {}
    if state is not None:
        values["state"] = jsonable(dict(state))
    if weights is not None:
        values["weights"] = jsonable(dict(weights))
    if decision is not None:
        values["decision"] = jsonable(dict(decision))
    with db.begin() as conn:
        conn.execute(_ex.update().where(_ex.c.id == exp.id).values(**values))
        if audit_action:
            write_audit(conn, actor, audit_action, f"experiment:{exp.id}",
                        {"weights": exp.weights, "state": exp.state}, values)
    return get(db, exp.id)


def finish(db: Database, exp: Experiment, status: str, decision: Mapping[str, Any], *,
           actor: str = "system") -> Experiment:
    """Close an experiment as promoted / rolled_back / stopped with the decision that closed it."""
    if status not in STATUSES[1:]:
        raise ValueError(f"bad final status {status!r}")
    # Routers route running experiments only, so traffic to the challenger stops with this
    # update; the planned weights stay for the analysis of the closed experiment.
    values = {"status": status, "decision": jsonable(dict(decision)), "ended_at": now()}
    with db.begin() as c:
        c.execute(_ex.update().where(_ex.c.id == exp.id).values(**values))
        write_audit(c, actor, f"experiment_{status}", f"experiment:{exp.id}",
                    {"status": exp.status}, values)
    return get(db, exp.id)
