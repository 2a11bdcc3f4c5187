"""What the dashboard pages read from the store: small, indexed queries, never a table scan
on the request path (the interactions browser pages by keyset on ``(ts, id)``).

>>> f = InteractionFilter.parse({"feedback": "negative", "start": "2024-05-01"})
>>> f.feedback, f.start
('negative', 1714521600.0)
>>> decode_cursor(encode_cursor(1714521600.25, "abc"))
(1714521600.25, 'abc')
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import NotFoundError, ValidationError
from tuneloop.store import Database, schema

__all__ = ["FEEDBACK_FILTERS", "InteractionFilter", "InteractionPage", "decode_cursor", "encode_cursor",
           "feedback_by_interaction", "interaction_detail", "list_datasets", "list_interactions", "loop_timeline",
           "timeline_segments", "version_detail", "version_tree"]

_IT, _FB, _AN = schema.interactions, schema.feedback, schema.annotations
FEEDBACK_FILTERS = ("", "any", "none", "positive", "negative", "thumbs", "rating", "comment", "regenerate",
                    "report", "copy")
NO_VERSION = "(none)"


# ---------------------------------------------------------------- interactions browser
def encode_cursor(ts: float, row_id: str) -> str:
    return f"{ts!r}_{row_id}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    ts, sep, row_id = cursor.partition("_")
    try:
        value = float(ts)
    except ValueError:
        value = math.nan
    if not sep or not row_id or not math.isfinite(value):
        raise ValidationError(f"bad page cursor {cursor!r}", field="cursor")
    return value, row_id


def _day(text: str, name: str) -> float | None:
    if not text:
        return None
    try:
        d = date.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{name} must be a date like 2024-05-31, not {text!r}", field=name) from None
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()


@dataclass(frozen=True)
class InteractionFilter:
    """Filters of the interactions browser; dates are UTC days, ``end`` inclusive."""

    version: str = ""
    user: str = ""
    start: float | None = None
    end: float | None = None
    feedback: str = ""
    status: str = ""
    q: str = ""

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> "InteractionFilter":
        fb = params.get("feedback", "") or ""
        if fb not in FEEDBACK_FILTERS:
            raise ValidationError(f"feedback filter must be one of {', '.join(FEEDBACK_FILTERS[1:])}", field="feedback")
        status = params.get("status", "") or ""
        if status not in ("", "ok", "error"):
            raise ValidationError("status must be ok or error", field="status")
        end = _day(params.get("end", "") or "", "end")
        return cls(version=(params.get("version") or "").strip(), user=(params.get("user") or "").strip(),
                   start=_day(params.get("start", "") or "", "start"),
                   end=end + 86400.0 if end is not None else None, feedback=fb, status=status,
                   q=(params.get("q") or "").strip()[:200])

    def conditions(self) -> list[Any]:
        cond: list[Any] = []
        if self.version == NO_VERSION:
            cond.append(_IT.c.version_id.is_(None))
        elif self.version:
            cond.append(_IT.c.version_id == self.version)
        if self.user:
            cond.append(_IT.c.user_id == self.user)
        if self.start is not None:
            cond.append(_IT.c.ts >= self.start)
        if self.end is not None:
            cond.append(_IT.c.ts < self.end)
        if self.status:
            cond.append(_IT.c.status == self.status)
        if self.q:
            cond.append(_IT.c.query.contains(self.q, autoescape=True))
        if self.feedback:
            cond.append(_feedback_condition(self.feedback))
        return cond

    def query_params(self) -> dict[str, str]:
        """The filter as URL parameters (for links that keep it)."""
        def day(ts: float | None, shift: float = 0.0) -> str:
            return "" if ts is None else datetime.fromtimestamp(ts - shift, tz=timezone.utc).date().isoformat()

        out = {"version": self.version, "user": self.user, "start": day(self.start),
               "end": day(self.end, 86400.0), "feedback": self.feedback, "status": self.status, "q": self.q}
        return {k: v for k, v in out.items() if v}


def _feedback_condition(name: str) -> Any:
    has = sa.select(_FB.c.id).where(_FB.c.interaction_id == _IT.c.id)
    if name == "none":
        return ~sa.exists(has)
    if name == "positive":
        has = has.where(sa.or_(sa.and_(_FB.c.kind == "thumbs", _FB.c.value > 0),
                               sa.and_(_FB.c.kind == "rating", _FB.c.value >= 4)))
    elif name == "negative":
        has = has.where(sa.or_(sa.and_(_FB.c.kind == "thumbs", _FB.c.value < 0),
                               sa.and_(_FB.c.kind == "rating", _FB.c.value <= 2), _FB.c.kind == "report"))
    elif name != "any":
        has = has.where(_FB.c.kind == name)
    return sa.exists(has)


@dataclass(frozen=True)
class InteractionPage:
    rows: list[dict[str, Any]]
    older: str | None            # cursor of the next (older) page
    newer: str | None            # cursor of the previous (newer) page
    feedback: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)


_LIST_COLUMNS = ("id", "ts", "user_id", "session_id", "version_id", "model", "experiment_id", "arm", "query",
                 "response", "latency_ms", "status", "quality_score", "reward", "failure_category")


def list_interactions(db: Database, flt: InteractionFilter, *, limit: int = 50, before: str | None = None,
                      after: str | None = None) -> InteractionPage:
    """One page, newest first. ``before``: the page older than a cursor; ``after``: newer."""
    if not 1 <= limit <= 500:
        raise ValidationError("limit must be between 1 and 500", field="limit")
    stmt = sa.select(*[_IT.c[c] for c in _LIST_COLUMNS]).where(*flt.conditions())
    newer_first = after is None
    if before:
        ts, rid = decode_cursor(before)
        # ``ts <= t`` lets the ts index bound the scan; the OR only breaks ties within one ts.
        stmt = stmt.where(_IT.c.ts <= ts, sa.or_(_IT.c.ts < ts, _IT.c.id < rid))
    elif after:
        ts, rid = decode_cursor(after)
        stmt = stmt.where(_IT.c.ts >= ts, sa.or_(_IT.c.ts > ts, _IT.c.id > rid))
    order = (_IT.c.ts.desc(), _IT.c.id.desc()) if newer_first else (_IT.c.ts.asc(), _IT.c.id.asc())
    rows = db.fetch_all(stmt.order_by(*order).limit(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    if not newer_first:
        rows.reverse()
    if not rows:
        return InteractionPage([], None, None)
    first, last = encode_cursor(rows[0]["ts"], rows[0]["id"]), encode_cursor(rows[-1]["ts"], rows[-1]["id"])
    older = last if (more if newer_first else True) else None
    newer = first if (before is not None if newer_first else more) else None
    return InteractionPage(rows, older, newer, feedback_by_interaction(db, [r["id"] for r in rows]))


def feedback_by_interaction(db: Database, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for start in range(0, len(ids), 500):
        stmt = (sa.select(_FB.c.interaction_id, _FB.c.kind, _FB.c.value, _FB.c.text, _FB.c.source, _FB.c.ts)
                .where(_FB.c.interaction_id.in_(list(ids[start:start + 500]))).order_by(_FB.c.ts))
        for r in db.fetch_all(stmt):
            out[r["interaction_id"]].append(r)
    return dict(out)


def interaction_detail(db: Database, interaction_id: str) -> dict[str, Any]:
    """The interaction, its conversation, feedback, annotations and dataset memberships."""
    row = db.fetch_one(sa.select(_IT).where(_IT.c.id == interaction_id))
    if row is None:
        raise NotFoundError(f"interaction {interaction_id!r} not found", id=interaction_id)
    msgs = [m for m in (row["messages"] or []) if isinstance(m, Mapping)]
    conversation = [{"role": str(m.get("role", "?")), "content": _text(m.get("content"))} for m in msgs]
    if not conversation:
        conversation = [{"role": "user", "content": row["query"] or ""}]
    if row["response"] and (conversation[-1]["role"] != "assistant" or conversation[-1]["content"] != row["response"]):
        conversation.append({"role": "assistant", "content": row["response"]})
    dm, ds = schema.dataset_members, schema.datasets
    datasets = db.fetch_all(sa.select(ds.c.id, ds.c.kind, ds.c.created_at, dm.c.role)
                            .join(ds, ds.c.id == dm.c.dataset_id).where(dm.c.interaction_id == interaction_id))
    annotations = db.fetch_all(sa.select(_AN).where(_AN.c.interaction_id == interaction_id).order_by(_AN.c.created_at))
    return {"row": row, "conversation": conversation, "datasets": datasets, "annotations": annotations,
            "feedback": feedback_by_interaction(db, [interaction_id]).get(interaction_id, [])}


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return "" if content is None else str(content)


# ---------------------------------------------------------------- versions and lineage
def version_tree(db: Database) -> dict[str, Any]:
    """Versions newest first, their aliases, and the lineage forest (children by parent)."""
    from tuneloop.registry.versions import Registry

    reg = Registry(db)
    versions = reg.list()
    aliases: dict[str, list[str]] = defaultdict(list)
    for a in reg.aliases():
        aliases[a.version_id].append(a.name)
    ids = {v.id for v in versions}
    children: dict[str | None, list[Any]] = defaultdict(list)
    for v in sorted(versions, key=lambda v: (v.created_at, v.id)):
        children[v.parent_id if v.parent_id in ids else None].append(v)
    return {"versions": versions, "aliases": dict(aliases), "children": dict(children)}


def version_detail(db: Database, version_id: str) -> dict[str, Any]:
    """A version with its ancestry, descendants, dataset, train run, evaluations and experiments."""
    from tuneloop.registry.versions import Registry

    reg = Registry(db)
    version = reg.get(version_id)
    ancestry, seen, parent = [], {version.id}, version.parent_id
    while parent and parent not in seen and len(ancestry) < 50:
        p = reg.find(parent)
        if p is None:
            break
        ancestry.append(p)
        seen.add(p.id)
        parent = p.parent_id
    mv, ev, ex, tr, ds = (schema.model_versions, schema.eval_runs, schema.experiments, schema.train_runs,
                          schema.datasets)
    children = db.fetch_all(sa.select(mv.c.id, mv.c.status, mv.c.created_at).where(mv.c.parent_id == version_id)
                            .order_by(mv.c.created_at))
    evals = db.fetch_all(sa.select(ev.c.id, ev.c.baseline_id, ev.c.golden_set, ev.c.golden_version, ev.c.n,
                                   ev.c.pass_rate, ev.c.passed, ev.c.created_at, ev.c.gate)
                         .where(ev.c.version_id == version_id).order_by(ev.c.created_at.desc()).limit(20))
    experiments = db.fetch_all(sa.select(ex.c.id, ex.c.name, ex.c.mode, ex.c.status, ex.c.control_id,
                                         ex.c.treatment_id, ex.c.started_at, ex.c.ended_at)
                               .where(sa.or_(ex.c.control_id == version_id, ex.c.treatment_id == version_id))
                               .order_by(ex.c.started_at.desc()).limit(20))
    train = db.fetch_one(sa.select(tr).where(tr.c.id == version.train_run_id)) if version.train_run_id else None
    dataset = db.fetch_one(sa.select(ds).where(ds.c.id == version.dataset_id)) if version.dataset_id else None
    aliases = [a.name for a in reg.aliases() if a.version_id == version_id]
    return {"version": version, "ancestry": ancestry, "children": children, "evals": evals,
            "experiments": experiments, "train": train, "dataset": dataset, "aliases": aliases}


# ---------------------------------------------------------------- datasets
def list_datasets(db: Database, limit: int = 200) -> list[dict[str, Any]]:
    """Newest datasets with their member counts by role and the versions trained on them."""
    ds, dm, mv = schema.datasets, schema.dataset_members, schema.model_versions
    rows = db.fetch_all(sa.select(ds).order_by(ds.c.created_at.desc(), ds.c.id.desc()).limit(limit))
    ids = [r["id"] for r in rows]
    members: dict[str, dict[str, int]] = defaultdict(dict)
    trained: dict[str, list[str]] = defaultdict(list)
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        for r in db.fetch_all(sa.select(dm.c.dataset_id, dm.c.role, sa.func.count().label("n"))
                              .where(dm.c.dataset_id.in_(part)).group_by(dm.c.dataset_id, dm.c.role)):
            members[r["dataset_id"]][r["role"]] = int(r["n"])
        for r in db.fetch_all(sa.select(mv.c.id, mv.c.dataset_id).where(mv.c.dataset_id.in_(part))):
            trained[r["dataset_id"]].append(r["id"])
    return [{**r, "members": members.get(r["id"], {}), "versions": trained.get(r["id"], [])} for r in rows]


# ---------------------------------------------------------------- loop runs
@dataclass(frozen=True)
class Segment:
    state: str
    start: float
    end: float
    x: float          # percent of the run's span
    width: float      # percent


def timeline_segments(history: Sequence[Sequence[Any]], end: float, *, min_width: float = 4.0) -> list[Segment]:
    """The spans a loop run spent in each state, laid out on 0-100% of the bar.

    ``history`` is ``details["history"]``: ``[[state, entered_at], ...]``; the last state
    lasts until ``end`` (the run's end, or now while it runs). Widths follow durations, but
    each span gets at least ``min_width`` percent: an experiment runs for days, the stages
    before it for minutes, and those minutes must stay visible (the labels carry the times).

    >>> [(s.state, s.width) for s in timeline_segments([["triggered", 0], ["trained", 30]], end=40)]
    [('triggered', 75.0), ('trained', 25.0)]
    >>> [s.width for s in timeline_segments([["a", 0], ["b", 1], ["c", 2]], end=1000)]
    [4.0, 4.0, 92.0]
    """
    points = [(str(s), float(t)) for s, t in history if t is not None]
    if not points:
        return []
    stops = [points[k + 1][1] if k + 1 < len(points) else max(end, t) for k, (_, t) in enumerate(points)]
    durations = [max(stop - t, 0.0) for (_, t), stop in zip(points, stops)]
    widths = _widths(durations, min(min_width, 100.0 / len(points)))
    out, x = [], 0.0
    for (state, t), stop, w in zip(points, stops, widths):
        out.append(Segment(state, t, stop, round(x, 3), round(w, 3)))
        x += w
    return out


def _widths(durations: list[float], floor: float) -> list[float]:
    """Shares of 100 proportional to ``durations``, none below ``floor`` (water-filling)."""
    small: set[int] = set()
    while True:
        rest = [k for k in range(len(durations)) if k not in small]
        room = 100.0 - floor * len(small)
        total = sum(durations[k] for k in rest)
        widths = {k: (room * durations[k] / total if total > 0 else room / len(rest)) for k in rest}
        newly = {k for k, w in widths.items() if w < floor}
        if not newly or len(newly) == len(rest):
            return [floor if k in small else widths[k] for k in range(len(durations))]
        small |= newly


def loop_timeline(db: Database, limit: int = 30) -> list[dict[str, Any]]:
    """Recent loop runs, newest first, each with its timeline segments and trigger."""
    lr, te = schema.loop_runs, schema.trigger_events
    rows = db.fetch_all(sa.select(lr, te.c.trigger.label("trigger_name"), te.c.reason.label("trigger_reason"))
                        .select_from(lr.outerjoin(te, te.c.id == lr.c.trigger_event_id))
                        .order_by(lr.c.started_at.desc(), lr.c.id.desc()).limit(limit))
    at = time.time()
    for r in rows:
        details = r["details"] or {}
        history = details.get("history") or [[r["state"], r["started_at"]]]
        r["segments"] = timeline_segments(history, r["ended_at"] or at)
        r["duration"] = (r["ended_at"] or at) - r["started_at"]
        r["timings"] = details.get("timings") or {}
        r["reason"] = details.get("reason") or r["trigger_reason"]
        hold = details.get("policy_hold")
        r["hold"] = hold if hold and hold.get("state") == r["state"] else None  # the update-rate rule it waits on
    return rows
