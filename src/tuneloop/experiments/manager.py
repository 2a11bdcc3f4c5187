"""``ABTestManager``: seed 002's A/B testing API on top of the registry and the store.

>>> from tuneloop.store import Database
>>> db = Database.open("sqlite:///:memory:")
>>> from tuneloop.registry import Registry
>>> _ = Registry(db).register("nayru-v1", backend="scripted"); _ = Registry(db).promote("nayru-v1")
>>> ab = ABTestManager(db, ABTestConfig(initial_challenger_traffic=0.1, min_duration_hours=0))
>>> exp = ab.deploy_challenger("nayru-v2", model_path="models/nayru-v2", backend="scripted")
>>> ab.route_request("user-1") in ("nayru-v1", "nayru-v2")
True
>>> ab.compare_models().decision
'continue'

Decisions (``auto_promote_if_ready``), default rule ``sequential``:

1. a guardrail breached (p95 latency ratio, error rate) -> roll back at once;
2. a sample-ratio mismatch -> hold (results untrustworthy until routing is fixed);
3. the challenger significantly worse (confidence sequence of the lift below 0) -> roll back;
4. minimum samples per arm and minimum duration not met -> continue;
5. the lower end of the lift's confidence sequence above ``min_improvement_threshold``
   -> promote; the upper end below it -> stop (futility); otherwise continue.

The confidence sequence (mSPRT) is valid at every look, so calling this every few minutes
does not inflate false promotions the way re-checking a t-test does. ``rule="weighted"``
is seed 002's composite score (no statistical guarantee; kept for compatibility). Every
decision is stored on the experiment row with its statistics; actions are audited.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tuneloop.errors import ConflictError, NotFoundError, ValidationError
from tuneloop.experiments import records
from tuneloop.experiments.analysis import Comparison, collect_arms, collect_units, compare
from tuneloop.experiments.bandit import posteriors_from_counts
from tuneloop.experiments.canary import CanaryState, next_step
from tuneloop.experiments.config import METRICS, MODES, ABTestConfig, Guardrails
from tuneloop.experiments.records import Experiment
from tuneloop.experiments.router import ExperimentRouter
from tuneloop.experiments.stats import SRMResult, srm_check
from tuneloop.ids import now
from tuneloop.registry.versions import ModelVersion, Registry, alias_for
from tuneloop.store import Database

__all__ = ["ABTestConfig", "ABTestManager", "Comparison", "Guardrails", "start_experiment"]


def _as_db(logger_or_db: Any) -> Database:
    """Accept a Database, anything with a ``.db`` Database (the capture UsageLogger), or a URL/path."""
    if isinstance(logger_or_db, Database):
        return logger_or_db
    inner = getattr(logger_or_db, "db", None)
    if isinstance(inner, Database):
        return inner
    if isinstance(logger_or_db, str):
        return Database.open(logger_or_db)
    raise ValidationError(f"need a Database, a UsageLogger or a database URL, got {type(logger_or_db).__name__}",
                          field="logger")


def _initial(mode: str, weight: float, cfg: ABTestConfig, at: float) -> tuple[dict, dict]:
    """Planned weights and initial state of a new experiment of ``mode``."""
    if mode == "ab":
        return {"control": 1 - weight, "treatment": weight}, {}
    if mode == "canary":
        state = CanaryState(step_started_at=at)
        w = state.weight(cfg.canary_steps)
        return {"control": 1 - w, "treatment": w}, {"canary": state.to_dict()}
    if mode == "shadow":
        return {"control": 1.0, "shadow": cfg.shadow_rate}, {}
    return {"control": 0.5, "treatment": 0.5}, {"bandit": posteriors_from_counts(
        {"control": (0, 0), "treatment": (0, 0)})}


def start_experiment(db: Database, control_id: str, treatment_id: str, *, mode: str = "ab",
                     traffic_weight: float | None = None, config: ABTestConfig | None = None,
                     scope: str | None = None, name: str | None = None, salt: str | None = None,
                     actor: str = "system") -> Experiment:
    """Start ``control_id`` vs ``treatment_id``; sets the ``challenger`` (shadow mode: ``shadow``) alias.

    ``traffic_weight`` is the treatment's share in A/B mode (default
    ``config.initial_challenger_traffic``); canary starts at its first step, bandit at 50/50.
    """
    cfg = config or ABTestConfig()
    if mode not in MODES:
        raise ValidationError(f"mode {mode!r} is not one of {', '.join(MODES)}", field="mode")
    if control_id == treatment_id:
        raise ValidationError("control and treatment must be different versions", field="treatment")
    weight = cfg.initial_challenger_traffic if traffic_weight is None else float(traffic_weight)
    if not 0.0 < weight < 1.0:
        raise ValidationError(f"traffic_weight must be in (0, 1), got {weight}", field="traffic_weight")
    reg = Registry(db, actor=actor)
    control, treatment = reg.get(control_id), reg.get(treatment_id)
    if treatment.tainted:
        raise ConflictError(f"{treatment_id!r} is tainted and cannot serve traffic", version_id=treatment_id)
    weights, state = _initial(mode, weight, cfg, now())
    exp_config = {**cfg.to_dict(), "mode": mode, "model": scope}
    exp = records.create(db, control.id, treatment.id, mode=mode, weights=weights, config=exp_config,
                         state=state, name=name, salt=salt, actor=actor)
    reg.set_alias(alias_for("shadow" if mode == "shadow" else "challenger", treatment.kind), treatment.id)
    return exp


class ABTestManager:
    """Deploy a challenger, route traffic, compare, and promote or roll back (seed 002's API).

    ``config=None`` analyses each experiment with the configuration it was started with
    (what the CLI does); an explicit config applies to every experiment this manager touches.
    ``scope`` is the request model name whose route this manager manages (None: default).
    """

    def __init__(self, logger_or_db: Any, config: ABTestConfig | Mapping[str, Any] | None = None, *,
                 actor: str = "ab_test", scope: str | None = None,
                 clock: Callable[[], float] = now) -> None:
        self.db = _as_db(logger_or_db)
        self._explicit = config is not None
        self.config = ABTestConfig.from_dict(config) if isinstance(config, Mapping) else (config or ABTestConfig())
        self.actor, self.scope, self.clock = actor, scope, clock
        self.registry = Registry(self.db, actor=actor)
        self.router = ExperimentRouter(self.db, ttl_s=1.0)

    # ------------------------------------------------------------------ lookup
    @property
    def experiment(self) -> Experiment | None:
        """The running experiment on this manager's route, if any."""
        return next((e for e in records.running(self.db) if e.scope == self.scope), None)

    def config_for(self, exp: Experiment) -> ABTestConfig:
        if self._explicit:
            return self.config
        stored = {k: v for k, v in exp.config.items() if k not in ("model",)}
        return ABTestConfig.from_dict(stored) if stored else self.config

    def _get(self, experiment_id: str | None, *, running: bool = False) -> Experiment:
        exp = records.get(self.db, experiment_id) if experiment_id else (
            self.experiment if running else records.latest(self.db, self.scope))
        if exp is None:
            raise NotFoundError("no experiment on this route" + (" is running" if running else ""))
        return exp

    # ------------------------------------------------------------------ seed API
    def deploy_challenger(self, model_name: str, model_path: str | None = None, traffic_weight: float | None = None,
                          *, mode: str | None = None, control: str | None = None, name: str | None = None,
                          salt: str | None = None, **version_fields: Any) -> Experiment:
        """Register ``model_name`` (unless it exists), make it the challenger, start an experiment.

        ``version_fields`` go to :meth:`Registry.register` (backend, base_model, adapter_path, ...).
        """
        version = self.registry.find(model_name)
        if version is None:
            version = self.registry.register(model_name, model_path=model_path, **version_fields)
        elif model_path is not None and version.model_path not in (None, str(model_path)):
            raise ConflictError(f"version {model_name!r} exists with model_path {version.model_path!r}, "
                                f"not {model_path!r}: register the new model under a new name",
                                version_id=model_name)
        champion = self.registry.get(control) if control else self.registry.champion(version.kind)
        if champion is None:
            raise ConflictError("there is no champion to compare against: promote a first version with "
                                "Registry.promote() or pass control=", version_id=model_name)
        exp = start_experiment(self.db, champion.id, version.id, mode=mode or self.config.mode,
                               traffic_weight=traffic_weight, config=self.config, scope=self.scope,
                               name=name or f"{champion.id} vs {version.id}", salt=salt, actor=self.actor)
        self.router.invalidate()
        return exp

    def route_request(self, user_id: str | None = None) -> str:
        """The version id that should answer this request (sticky per ``user_id``)."""
        route = self.router.route(self.scope or "", user_id)
        if route.version_id is None:
            raise NotFoundError("no champion and no running experiment: register and promote a version first")
        return route.version_id

    def compare_models(self, experiment_id: str | None = None) -> Comparison | None:
        """The current comparison of the running (or given) experiment; None when there is none."""
        exp = records.get(self.db, experiment_id) if experiment_id else self.experiment
        return None if exp is None else self._compare(exp, self.config_for(exp))[0]

    def auto_promote_if_ready(self) -> bool:
        """Decide and act: promote (returns True), roll back, stop, advance a canary, or wait."""
        exp = self.experiment
        if exp is None:
            return False
        cfg = self.config_for(exp)
        cmp, arms = self._compare(exp, cfg)
        state = self._next_state(exp, cmp, arms, cfg)
        action, reason = cmp.decision, cmp.reason
        if exp.mode == "canary" and action != "rollback":
            stepped = self._canary_step(exp, cmp, cfg, state)
            if stepped is not None:
                action, reason = stepped
                if action == "advance":
                    return False
        doc = {**cmp.to_dict(), "decision": action, "reason": reason, "decided_at": self.clock()}
        if action == "promote" and cfg.enable_auto_promotion:
            self._close(exp, "promoted", doc)
            return True
        if action in ("rollback", "stop") and cfg.auto_rollback:
            self._close(exp, "rolled_back" if action == "rollback" else "stopped", doc)
            return False
        if action in ("promote", "rollback", "stop"):
            doc["reason"] += f" (automatic {action} is disabled)"
        records.save(self.db, exp, state=state, decision=doc, actor=self.actor,
                     audit_action="experiment_hold" if action == "hold" else None)
        return False

    def promote(self, experiment_id: str | None = None, *, reason: str = "manual promotion") -> ModelVersion:
        """Promote the experiment's challenger now, whatever the statistics say (audited)."""
        exp = self._get(experiment_id, running=True)
        if exp.status != "running":
            raise ConflictError(f"experiment {exp.id} is {exp.status}, not running", experiment_id=exp.id)
        doc = self._manual_doc(exp, "promote", reason)
        self._close(exp, "promoted", doc)
        return self.registry.get(exp.treatment_id)

    def rollback(self, experiment_id: str | None = None, *, reason: str = "manual rollback") -> str | None:
        """Undo: end a running experiment (champion kept), or revert a promoted one's promotion.

        Returns the champion's version id afterwards.
        """
        try:
            exp = self._get(experiment_id)
        except NotFoundError:
            exp = None
        kind = self.registry.get(exp.treatment_id).kind if exp else "generator"
        if exp is not None and exp.status == "running":
            self._close(exp, "rolled_back", self._manual_doc(exp, "rollback", reason))
        elif exp is not None and exp.status == "promoted":
            champion = self.registry.champion(kind)
            if champion is None or champion.id != exp.treatment_id:
                raise ConflictError(f"the champion is no longer {exp.treatment_id!r}; use "
                                    "`tuneloop registry rollback` instead", experiment_id=exp.id)
            self.registry.rollback(kind, reason=f"{reason} (experiment {exp.id})")
            records.finish(self.db, exp, "rolled_back", {**(exp.decision or {}), "decision": "rollback",
                                                         "reason": reason, "decided_at": self.clock(),
                                                         "manual": True}, actor=self.actor)
        else:
            self.registry.rollback(kind, reason=reason)
        self.router.invalidate()
        champion = self.registry.champion(kind)
        return champion.id if champion else None

    def stop(self, experiment_id: str | None = None, *, reason: str = "stopped") -> Experiment:
        """End a running experiment without promoting; the challenger is rejected."""
        exp = self._get(experiment_id, running=True)
        return self._close(exp, "stopped", self._manual_doc(exp, "stop", reason))

    # ------------------------------------------------------------------ internals
    def _compare(self, exp: Experiment, cfg: ABTestConfig):
        arms = collect_arms(self.db, exp)
        end = exp.ended_at or self.clock()
        p_min = (exp.state.get("sequential") or {}).get("p_min")
        cmp = compare(exp, arms, cfg, duration_hours=max(0.0, end - exp.started_at) / 3600,
                      srm=self._srm(exp), p_min_before=p_min)
        return cmp, arms

    def _srm(self, exp: Experiment) -> SRMResult | None:
        """SRM on units (users) against the planned split; None for the adaptive bandit."""
        if exp.mode == "bandit":
            return None
        since = CanaryState.from_dict(exp.state.get("canary")).step_started_at if exp.mode == "canary" else None
        units = collect_units(self.db, exp, since)
        arms = ("control", exp.treatment_arm)
        weights = [float(exp.weights.get(a, 0.0)) for a in arms]
        observed = [units.get(a, (0, 0))[1] for a in arms]
        if min(weights) <= 0 or sum(observed) * min(weights) / sum(weights) < 5:
            return None  # too few units for a chi-square approximation
        return srm_check(observed, weights, threshold=self.config_for(exp).srm_threshold)

    def _next_state(self, exp: Experiment, cmp: Comparison, arms, cfg: ABTestConfig) -> dict:
        state = dict(exp.state)
        if cmp.sequential is not None:
            looks = int((state.get("sequential") or {}).get("looks", 0)) + 1
            state["sequential"] = {"p_min": cmp.p_value, "looks": looks}
        if exp.mode == "bandit":
            metric = cfg.primary_metric if METRICS[cfg.primary_metric][0] == "binary" else "reward_positive_rate"
            counts = {a: arms[a].counts.get(metric, (0, 0)) for a in ("control", "treatment")}
            state["bandit"] = posteriors_from_counts(counts)
        return state

    def _canary_step(self, exp: Experiment, cmp: Comparison, cfg: ABTestConfig, state: dict):
        """Advance the ramp while guardrails hold; before the last step no promotion happens."""
        cs = CanaryState.from_dict(state.get("canary"))
        if cs.at_last_step(cfg.canary_steps):
            return None
        at_step = collect_units(self.db, exp, cs.step_started_at).get("treatment", (0, 0))[0]
        new, act = next_step(cs, cfg.canary_steps, breached=bool(cmp.breached), samples_at_step=at_step,
                             min_samples=cfg.canary_min_samples, now=self.clock(),
                             min_step_seconds=cfg.canary_step_hours * 3600)
        if act == "advance":
            w = new.weight(cfg.canary_steps)
            state["canary"] = new.to_dict()
            reason = f"canary guardrails hold after {at_step} treatment requests: traffic {exp.treatment_weight:.0%} -> {w:.0%}"
            doc = {**cmp.to_dict(), "decision": "advance", "reason": reason, "decided_at": self.clock()}
            records.save(self.db, exp, state=state, weights={"control": 1 - w, "treatment": w}, decision=doc,
                         actor=self.actor, audit_action="experiment_advance")
            self.router.invalidate()
            return "advance", reason
        if cmp.decision in ("promote", "stop"):
            return "continue", f"canary at {exp.treatment_weight:.0%} ({at_step} requests at this step): {cmp.reason}"
        return None

    def _manual_doc(self, exp: Experiment, action: str, reason: str) -> dict:
        try:
            stats = self._compare(exp, self.config_for(exp))[0].to_dict()
        except Exception as exc:  # a manual action must not depend on the analysis succeeding
            stats = {"analysis_error": str(exc)}
        return {**stats, "decision": action, "reason": reason, "manual": True, "decided_at": self.clock()}

    def _close(self, exp: Experiment, status: str, doc: dict) -> Experiment:
        if status == "promoted":
            self.registry.promote(exp.treatment_id, reason=f"experiment {exp.id}: {doc.get('reason')}")
            closed = records.finish(self.db, exp, status, doc, actor=self.actor)
        else:
            closed = records.finish(self.db, exp, status, doc, actor=self.actor)  # traffic stops first
            self.registry.reject(exp.treatment_id, reason=f"experiment {exp.id} {status}: {doc.get('reason')}")
        self.router.invalidate()
        return closed
