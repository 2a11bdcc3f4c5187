"""Traffic simulation for experiment tests: real routing, real rows in the store."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from tuneloop.experiments.router import ExperimentRouter
from tuneloop.ids import new_id, now
from tuneloop.registry import Registry
from tuneloop.store import schema


class Traffic:
    """Sends simulated users through an :class:`ExperimentRouter` and stores what they'd log.

    ``quality`` maps version id -> probability of a thumbs-up; ``latency`` version -> mean ms;
    ``errors`` version -> error probability; ``quality_score`` version -> mean quality score.
    """

    def __init__(self, db, seed: int = 0) -> None:
        self.db = db
        self.rng = np.random.default_rng(seed)
        self.router = ExperimentRouter(db, ttl_s=3600, seed=seed)  # refreshed by run()
        self.user_offset = 0

    def run(self, users: int, quality: Mapping[str, float], *, latency: Mapping[str, float] | None = None,
            errors: Mapping[str, float] | None = None, quality_score: Mapping[str, float] | None = None,
            rated: float = 1.0, requests_per_user: int = 1, model: str = "tuneloop",
            shadow_judge: bool = True) -> dict[str, int]:
        self.router.invalidate()
        rows, fb, arms = [], [], {}
        t = now()
        for u in range(self.user_offset, self.user_offset + users):
            user = f"user-{u}"
            for _ in range(requests_per_user):
                r = self.router.route(model, user)
                self._one(rows, fb, r.version_id, r.experiment_id, r.arm, user, t, quality, latency, errors,
                          quality_score, rated, source="user")
                arms[r.arm] = arms.get(r.arm, 0) + 1
                if r.shadow_version_id:
                    self._one(rows, fb, r.shadow_version_id, r.experiment_id, "shadow", user, t, quality, latency,
                              errors, quality_score, rated if shadow_judge else 0.0, source="judge")
                    arms["shadow"] = arms.get("shadow", 0) + 1
        self.user_offset += users
        with self.db.begin() as conn:
            self.db.insert_ignore(conn, schema.interactions, rows)
            self.db.insert_ignore(conn, schema.feedback, fb)
        return arms

    def _one(self, rows, fb, version, exp_id, arm, user, t, quality, latency, errors, quality_score, rated, source):
        rng = self.rng
        iid = new_id()
        failed = bool(rng.random() < (errors or {}).get(version, 0.0))
        rows.append({"id": iid, "ts": t, "user_id": user, "model": "tuneloop", "version_id": version,
                     "experiment_id": exp_id, "arm": arm, "query": "q", "response": "" if failed else "a",
                     "latency_ms": float(rng.exponential((latency or {}).get(version, 100.0))),
                     "status": "error" if failed else "ok",
                     "quality_score": (float(np.clip(rng.normal(quality_score[version], 0.1), 0, 1))
                                       if quality_score else None),
                     "reward": None})
        if not failed and rng.random() < rated:
            up = rng.random() < quality[version]
            fb.append({"id": new_id(), "interaction_id": iid, "kind": "thumbs", "value": 1.0 if up else -1.0,
                       "source": source, "ts": t, "user_id": user, "text": None, "meta": None})


@pytest.fixture
def reg(db):
    r = Registry(db, actor="tester")
    r.register("v1", backend="scripted", base_model="tiny")
    r.register("v2", backend="scripted", base_model="tiny", parent_id="v1")
    r.promote("v1")
    return r


@pytest.fixture
def traffic(db):
    return Traffic(db)
