"""A small world for the privacy tests: two users' traffic, feedback, annotations, a golden
example, real dataset snapshots built by the generator, and model versions on them."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from tuneloop.capture.records import feedback_row, interaction_row, write_feedback, write_interactions
from tuneloop.ids import new_id, now
from tuneloop.store import schema


@dataclass
class World:
    db: object
    ids: dict  # user -> interaction ids
    d_both: str  # snapshot with u1 and u2
    d_clean: str  # snapshot with u2 only
    path_both: str


def add_traffic(db, user, n, *, ts=None, text="question", consent=True, guarded=True):
    """``guarded=False`` writes past the ingestion guard (which drops deleted users' rows), as a
    client writing to the database directly would: the late rows that sweeps must find."""
    rows = [interaction_row(query=f"{text} {user} {i} about the weather in town number {i}",
                            response=f"answer {i} for {user}", user_id=user, model="m",
                            quality_score=0.9, ts=ts if ts is not None else now(), consent=consent)
            for i in range(n)]
    if guarded:
        write_interactions(db, rows)
    else:
        with db.begin() as conn:
            db.insert_ignore(conn, schema.interactions, rows)
    return [r["id"] for r in rows]


def count(db, table, where=None):
    stmt = sa.select(sa.func.count()).select_from(table)
    if where is not None:
        stmt = stmt.where(where)
    return int(db.scalar(stmt))


def build_snapshot(db, path, *, since=None):
    from tuneloop.datasets.generator import DataGeneratorConfig, TrainingDataGenerator

    cfg = DataGeneratorConfig(kind="sft", min_quality_score=None, deduplicate=False, leak_guard=False,
                              llamafactory_info=False, since=since)
    return TrainingDataGenerator(db, cfg).generate(path)


@pytest.fixture
def world(db, tmp_path):
    ids = {"u1": add_traffic(db, "u1", 3), "u2": add_traffic(db, "u2", 3)}
    fb = [feedback_row(ids["u1"][0], kind="thumbs", value=1, user_id="u1"),
          feedback_row(ids["u1"][1], kind="comment", text="great, mail me at u1@example.com"),
          # u1 rated u2's answer (shared session): u1's own feedback row
          feedback_row(ids["u2"][0], kind="rating", value=4, user_id="u1"),
          feedback_row(ids["u2"][1], kind="thumbs", value=-1, user_id="u2")]
    write_feedback(db, fb)
    with db.begin() as conn:
        conn.execute(schema.annotations.insert(), [
            {"id": new_id(), "interaction_id": ids["u1"][2], "kind": "rating", "prompt": "p", "created_at": now()},
            {"id": new_id(), "interaction_id": ids["u2"][2], "kind": "rating", "prompt": "p", "created_at": now()}])
        conn.execute(schema.golden_examples.insert(), [
            {"id": new_id(), "prompt": "from u1", "expected": "x", "source_interaction_id": ids["u1"][0],
             "status": "proposed", "created_at": now()},
            {"id": new_id(), "prompt": "curated", "expected": "y", "source_interaction_id": None,
             "status": "approved", "created_at": now()}])
        conn.execute(schema.retrieval_logs.insert(), [
            {"id": new_id(), "interaction_id": ids[u][0], "ts": now(), "query": f"docs for {u}"} for u in ("u1", "u2")])
    both = build_snapshot(db, tmp_path / "both.jsonl")
    # u2-only snapshot: built after u1 withdrew consent, then consent restored
    from tuneloop.privacy.consent import set_consent

    set_consent(db, "u1", training=False, actor="test")
    clean = build_snapshot(db, tmp_path / "clean.jsonl")
    set_consent(db, "u1", training=True, actor="test")
    return World(db, ids, both.dataset_id, clean.dataset_id, both.path)
