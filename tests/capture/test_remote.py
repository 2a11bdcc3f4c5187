"""UsageLogger in remote mode against real HTTP servers on loopback (uvicorn in a thread).

Two servers are used: a small FastAPI app written here (so every delivery rule can be
provoked: 5xx, 401, 413, 422) that writes through the same capture functions as the
product, and the product's own ``tuneloop.server.app.create_app``.
"""
from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from fastapi import Body, FastAPI, Header
from fastapi.responses import JSONResponse

from capture_helpers import LiveServer, count, free_port
from tuneloop.capture.records import normalize_feedback, normalize_interaction, write_feedback, write_interactions
from tuneloop.errors import ValidationError
from tuneloop.store import schema

I, F = schema.interactions, schema.feedback


def ingest_app(db, *, fail_first: int = 0, key: str | None = None, max_items: int | None = None) -> FastAPI:
    """A real ingestion server: optional outage (503 for the first calls), key check, size limit,
    and a 422 for rows that carry ``metadata.poison``."""
    app = FastAPI()
    app.state.calls = 0
    app.state.received = 0

    def guard(authorization, n):
        app.state.calls += 1
        if key and authorization != f"Bearer {key}":
            return JSONResponse({"error": "bad key"}, status_code=401)
        if app.state.calls <= fail_first:
            return JSONResponse({"error": "warming up"}, status_code=503, headers={"retry-after": "0.05"})
        if max_items is not None and n > max_items:
            return JSONResponse({"error": "too large"}, status_code=413)
        return None

    def ingest(items, normalize, write, authorization):
        refused = guard(authorization, len(items))
        if refused is not None:
            return refused
        try:
            rows = [normalize(x) for x in items]
        except ValidationError as exc:
            return JSONResponse(exc.to_dict(), status_code=422)
        if any((r.get("meta") or {}).get("poison") for r in rows):
            return JSONResponse({"error": "poison", "field": "metadata"}, status_code=422)
        app.state.received += len(rows)
        return {"inserted": write(db, rows)}

    @app.post("/v1/interactions")
    def interactions(body: dict = Body(...), authorization: str | None = Header(None)):
        return ingest(body["interactions"], normalize_interaction, write_interactions, authorization)

    @app.post("/v1/feedback")
    def feedback(body: dict = Body(...), authorization: str | None = Header(None)):
        return ingest(body["feedback"], normalize_feedback, write_feedback, authorization)

    return app


def _log_some(lg, n, tag="x"):
    ids = [lg.log(query=f"{tag}{i}", response="r" * 50, model="remote", latency_ms=float(i),
                  metadata={"i": i}) for i in range(n)]
    fids = [lg.record_feedback(rid, feedback=1 if i % 2 else -1) for i, rid in enumerate(ids[:n // 4])]
    return ids, fids


def test_server_down_then_up_delivers_every_row_exactly_once(db, make_logger):
    port = free_port()  # nothing listens here yet
    lg = make_logger(endpoint=f"http://127.0.0.1:{port}", max_attempts=2, flush_interval=0.05, batch_size=64)
    ids, fids = _log_some(lg, 300)
    assert lg.flush(timeout=60)  # returns: every row is durably spooled
    assert lg.spooled == 375 and lg._spool.count() == 375 and count(db) == 0
    app = ingest_app(db)
    with LiveServer(app, port=port):
        assert lg.flush(timeout=60)  # the server answers: the spool is replayed
        assert lg._spool.count() == 0
        more, _ = _log_some(lg, 40, tag="y")
        assert lg.flush(timeout=60)
    stored = {r["id"] for r in db.fetch_all(sa.select(I.c.id))}
    assert stored == set(ids) | set(more)
    assert {r["id"] for r in db.fetch_all(sa.select(F.c.id))} >= set(fids)
    assert count(db, F) == 75 + 10
    assert app.state.received == 300 + 75 + 40 + 10  # nothing was sent twice
    assert lg.spooled == 375 and lg.dropped == 0 and lg.rejected == 0
    row = db.fetch_one(sa.select(I).where(I.c.id == ids[7]))
    assert row["meta"] == {"i": 7} and row["latency_ms"] == 7.0 and row["dedupe_hash"]


def test_a_new_process_replays_what_an_old_one_spooled(db, make_logger, tmp_path):
    port, spool = free_port(), tmp_path / "shared.jsonl"
    first = make_logger(endpoint=f"http://127.0.0.1:{port}", max_attempts=1, spool_path=spool)
    ids, _ = _log_some(first, 100)
    first.close()
    assert count(db) == 0 and spool.exists()
    with LiveServer(ingest_app(db), port=port):
        second = make_logger(endpoint=f"http://127.0.0.1:{port}", spool_path=spool)
        assert second.flush(timeout=60)
        assert count(db, where=I.c.id.in_(ids)) == 100 and second._spool.count() == 0


def test_5xx_answers_are_retried_with_backoff(db, make_logger):
    app = ingest_app(db, fail_first=2)
    with LiveServer(app) as server:
        lg = make_logger(endpoint=server.url, max_attempts=5)
        ids, _ = _log_some(lg, 20)
        assert lg.flush(timeout=60)
    assert count(db) == 20 and app.state.calls >= 3 and lg.spooled == 0


def test_a_refused_key_keeps_rows_until_a_good_key_sends_them(db, make_logger, tmp_path, caplog):
    app, spool = ingest_app(db, key="sekret"), tmp_path / "auth.jsonl"
    with LiveServer(app) as server:
        bad = make_logger(endpoint=server.url, api_key="wrong", spool_path=spool)
        with caplog.at_level(logging.ERROR, logger="tuneloop.capture"):
            ids, _ = _log_some(bad, 30)
            assert bad.flush(timeout=60)
        assert count(db) == 0 and bad.spooled == 30 + 7
        assert any("refused" in r.getMessage() for r in caplog.records)
        bad.close()
        good = make_logger(endpoint=server.url, api_key="sekret", spool_path=spool)
        assert good.flush(timeout=60)
    assert count(db, where=I.c.id.in_(ids)) == 30 and count(db, F) == 7


def test_too_large_batches_are_split_and_bad_rows_isolated(db, make_logger):
    app = ingest_app(db, max_items=16)
    with LiveServer(app) as server:
        lg = make_logger(endpoint=server.url, batch_size=100, flush_interval=5)
        good = [lg.log(query=f"g{i}") for i in range(50)]
        poison = lg.log(query="p", metadata={"poison": True})
        good += [lg.log(query=f"g{i}") for i in range(50, 90)]
        assert lg.flush(timeout=60)
    assert count(db) == 90 and count(db, where=I.c.id == poison) == 0
    assert lg.rejected == 1 and lg.spooled == 0


def test_with_the_tuneloop_server(db_url, db, make_logger):
    """Down, then the product's server comes up: every row lands exactly once."""
    from tuneloop.server.app import create_app
    from tuneloop.server.keys import create_key

    key = create_key(db, "admin", name="sdk").secret
    port = free_port()
    lg = make_logger(endpoint=f"http://127.0.0.1:{port}", api_key=key, max_attempts=1, batch_size=50)
    ids, fids = _log_some(lg, 200)
    assert lg.flush(timeout=60) and lg.spooled == 250 and count(db) == 0
    with LiveServer(create_app(db_url), port=port):
        assert lg.flush(timeout=60)
        stats = lg.get_statistics()
        assert stats["total"] == 200 and stats["spool_pending"] == 0
    assert {r["id"] for r in db.fetch_all(sa.select(I.c.id))} == set(ids)
    assert {r["id"] for r in db.fetch_all(sa.select(F.c.id))} == set(fids)


def test_with_the_tuneloop_server_insecure_dev(db_url, db, make_logger):
    from tuneloop.server.app import create_app

    with LiveServer(create_app(db_url, insecure_dev=True)) as server:
        lg = make_logger(endpoint=server.url)
        ids, _ = _log_some(lg, 120)
        lg.log(query="dup", id="same-id")
        lg.log(query="dup again", id="same-id")
        assert lg.flush(timeout=60)
    assert count(db) == 121 and lg.spooled == 0


@pytest.mark.parametrize("endpoint", ["localhost:8000", "ftp://x"])
def test_bad_endpoint_is_named(endpoint, tmp_path):
    from tuneloop.capture import UsageLogger
    from tuneloop.errors import ConfigError

    with pytest.raises(ConfigError, match="endpoint"):
        UsageLogger(endpoint=endpoint, spool_path=tmp_path / "s.jsonl")


def test_a_wrong_endpoint_path_keeps_rows_in_the_spool(db, make_logger):
    with LiveServer(ingest_app(db)) as server:
        lg = make_logger(endpoint=server.url + "/not-here")
        _log_some(lg, 12)
        assert lg.flush(timeout=60)
    assert lg.spooled == 15 and lg.rejected == 0 and lg._spool.count() == 15 and count(db) == 0
