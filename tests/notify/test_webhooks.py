"""Webhooks against a real local HTTP receiver: signatures, retries, bodies, the deliveries table,
and the loop that announces its events without ever waiting on (or failing because of) a webhook."""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tuneloop.errors import ConfigError
from tuneloop.loop.service import ContinuousLearningLoop
from tuneloop.notify import Notifier, WebhookConfig, sign, verify_signature
from tuneloop.registry.versions import Registry
from tuneloop.store import schema

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "loop"))
import policy_support as ps  # noqa: E402
from receiver import Receiver  # noqa: E402


def _hook(url, **over):
    return {"url": url, "secret": "s3cret", "backoff_s": 0.05, "max_backoff_s": 0.2, "timeout_s": 5, **over}


def _deliveries(db):
    w = schema.webhook_deliveries
    return db.fetch_all(sa.select(w).order_by(w.c.created_at, w.c.subject))


def _two_promotions(db):
    reg = Registry(db)
    for vid in ("v0", "v1"):
        reg.register(vid, backend="scripted", params={"script": {"default": vid}})
        reg.promote(vid, reason=f"{vid} won")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_signed_delivery_is_retried_after_a_500_and_each_attempt_recorded(db):
    _two_promotions(db)
    with Receiver(secret="s3cret", script=[500]) as rx:
        n = Notifier(db, [_hook(rx.url, events=["promotion"])])
        queued = n.sweep()
        assert len(queued) == 2  # v0 (the first champion) and v1
        assert n.flush(10)
        assert [r["status"] for r in rx.requests] == [500, 200, 200]
        assert all(r["signed"] for r in rx.requests)
        assert rx.requests[0]["delivery"] == rx.requests[1]["delivery"]  # the retry is the same delivery
        rows = _deliveries(db)
        assert [r["status"] for r in rows] == ["delivered", "delivered"]
        assert sorted(r["attempts"] for r in rows) == [1, 2] and {r["response_status"] for r in rows} == {200}
        assert rows[0]["url"] == f"{rx.url.rsplit('/hooks', 1)[0]}/…"  # no path: it may hold a token
        v1 = next(r for r in rx.requests if r["body"]["data"]["version_id"] == "v1" and r["status"] == 200)
        body = v1["body"]
        assert body["event"] == "promotion" and body["data"]["previous_champion"] == "v0"
        assert body["title"] == "Promoted v1 to champion (was v0)" and body["id"] == v1["delivery"]
        # a second sweep finds the same events: nothing new is recorded or sent
        assert n.sweep() == [] and n.flush(5)
        assert len(rx.requests) == 3 and len(_deliveries(db)) == 2
        n.close()


def test_a_bad_signature_is_refused_and_not_retried_and_slack_gets_text_and_blocks(db):
    _two_promotions(db)
    with Receiver(secret="s3cret") as rx:
        n = Notifier(db, [_hook(rx.url, events=["promotion"], secret="wrong", name="tampered"),
                          _hook(rx.url + "/slack", events=["promotion"], format="slack", name="slack")])
        n.sweep()
        assert n.flush(10)
        rows = {(r["hook"], r["subject"]): r for r in _deliveries(db)}
        tampered = [r for (h, _), r in rows.items() if h == "tampered"]
        assert {(r["status"], r["attempts"], r["response_status"]) for r in tampered} == {("failed", 1, 401)}
        slack = [r["body"] for r in rx.requests if r["signed"] and "blocks" in r["body"]]
        assert len(slack) == 2
        body = next(b for b in slack if "v1" in b["text"])
        assert body["text"] == "Promoted v1 to champion (was v0)"
        assert body["blocks"][0]["type"] == "header" and body["blocks"][-1]["type"] == "context"
        assert any(b["type"] == "section" and "v1 won" in (b.get("text") or {}).get("text", "") for b in body["blocks"])
        n.close()


def test_an_unreachable_webhook_never_blocks_nor_breaks_the_loop(db, tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/hook"
    cfg = ps.config(db, tmp_path, webhooks=[_hook(url, max_attempts=3, events=["gate_failure"])])
    with db.begin() as conn:
        conn.execute(schema.eval_runs.insert(), {"id": "e1", "version_id": "v9", "golden_set": "default", "n": 10,
                                                 "pass_rate": 0.4, "passed": False, "created_at": time.time(),
                                                 "gate": {"reasons": ["pass rate 0.40 < threshold 0.80"],
                                                          "champion_pass_rate": 0.8}})
    loop = ContinuousLearningLoop(cfg, db=db, stages=ps.ScriptedStages(db))
    t0 = time.perf_counter()
    result = loop.run_iteration()
    assert time.perf_counter() - t0 < 2.0 and result["action"] in ("checked", "started")
    assert loop.notifier.flush(20)
    (row,) = _deliveries(db)
    assert (row["event"], row["status"], row["attempts"]) == ("gate_failure", "failed", 3)
    assert "ConnectError" in row["error"] and row["response_status"] is None
    loop.notifier.close()


def test_the_loop_announces_every_kind_of_event(db, tmp_path):
    from tuneloop.monitor.reports import write_drift_report

    with Receiver(secret="s3cret") as rx:
        ps.champion(db)
        cfg = ps.config(db, tmp_path, require_approval=True, webhooks=[_hook(rx.url), _hook(rx.url, format="slack", name="chat")])
        runner, run_id = ps.gated_run(db, cfg)
        reg = Registry(db)
        reg.register("v7", backend="scripted")
        reg.promote("v7")
        reg.rollback(reason="latency regression")
        write_drift_report(db, "embedding", {}, {"drifted_methods": ["ks", "mmd"]}, True)
        write_drift_report(db, "embedding", {}, {"drifted_methods": []}, False)  # no alert for a calm report
        with db.begin() as conn:
            conn.execute(schema.eval_runs.insert(), {"id": "e1", "version_id": "v9", "golden_set": "default", "n": 10,
                                                     "pass_rate": 0.4, "passed": False, "created_at": time.time(),
                                                     "gate": {"reasons": ["pass rate 0.40 < 0.80"]}})
        loop = ContinuousLearningLoop(cfg, db=db)
        assert loop.run_iteration()["state"] == "awaiting_approval"
        assert loop.notifier.flush(10)
        kinds = sorted({r["event"] for r in rx.requests})
        assert kinds == ["approval_request", "drift_alert", "gate_failure", "promotion", "rollback"]
        assert len(rx.requests) == 2 * 6 and all(r["signed"] for r in rx.requests)  # 2 promotions (v0, v7)
        approval = next(r["body"] for r in rx.of("approval_request") if "data" in r["body"])
        assert approval["data"]["run_id"] == run_id and f"tuneloop loop approve {run_id}" in approval["text"]
        assert approval["data"]["evidence"]["gate"]["pass_rate"] == 0.9
        drift = next(r["body"] for r in rx.of("drift_alert") if "data" in r["body"])
        assert "ks, mmd" in drift["text"]
        rollback = next(r["body"] for r in rx.of("rollback") if "data" in r["body"])
        assert (rollback["data"]["from"], rollback["data"]["to"]) == ("v7", "v0")
        summary = loop.get_status_summary()
        assert summary["webhooks"] == {"configured": 2, "delivered": 12}
        loop.notifier.close()


def test_signatures_refuse_tampering_and_replays():
    body = b'{"event":"promotion"}'
    ts, sig = sign("k", body)
    assert verify_signature("k", body, ts, sig)
    assert not verify_signature("k", body + b" ", ts, sig)
    assert not verify_signature("other", body, ts, sig)
    assert not verify_signature("k", body, str(int(ts) - 3600), sig)  # the timestamp is signed too
    old_ts, old_sig = sign("k", body, timestamp=int(time.time()) - 3600)
    assert not verify_signature("k", body, old_ts, old_sig)  # a replay an hour later


def test_webhook_config_is_validated_with_the_key_named(monkeypatch):
    with pytest.raises(ConfigError, match="http"):
        WebhookConfig.from_dict({"url": "ftp://x"})
    with pytest.raises(ConfigError, match="unknown event"):
        WebhookConfig.from_dict({"url": "https://x.test/h", "events": ["deploy"]})
    with pytest.raises(ConfigError, match="format"):
        WebhookConfig.from_dict({"url": "https://x.test/h", "format": "teams"})
    with pytest.raises(ConfigError, match="TUNELOOP_TEST_HOOK_SECRET"):
        WebhookConfig.from_dict({"url": "https://x.test/h", "secret": "env:TUNELOOP_TEST_HOOK_SECRET"})
    monkeypatch.setenv("TUNELOOP_TEST_HOOK_SECRET", "from-env")
    hook = WebhookConfig.from_dict({"url": "https://x.test/h", "secret": "env:TUNELOOP_TEST_HOOK_SECRET", "events": "*"})
    assert hook.signing_key() == "from-env" and len(hook.events) == 5
    assert "from-env" not in str(hook.to_dict()) and os.environ["TUNELOOP_TEST_HOOK_SECRET"] == "from-env"


def test_cli_lists_webhooks_and_sends_pending_deliveries(db, db_url, tmp_path):
    import json

    from typer.testing import CliRunner

    from tuneloop.cli import app

    _two_promotions(db)
    with Receiver(secret="s3cret", script=[503]) as rx:
        cfg = tmp_path / "loop.json"
        cfg.write_text(json.dumps({"webhooks": [_hook(rx.url, events=["promotion"], name="ops")]}))
        r = CliRunner().invoke(app, ["--db", db_url, "loop", "webhooks", "--config", str(cfg), "--send"],
                               env={"COLUMNS": "250"})
        assert r.exit_code == 0, r.output
        assert "ops: http://127.0.0.1" in r.stdout and "sent 2 deliveries" in r.stdout
        assert r.stdout.count("delivered") == 2 and "s3cret" not in r.stdout
        assert [q["status"] for q in rx.requests] == [503, 200, 200]
