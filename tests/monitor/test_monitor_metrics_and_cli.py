"""Prometheus exposition and ``tuneloop monitor ...`` commands."""
from __future__ import annotations

import json
import random
import sys
import types

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from tuneloop.errors import ConfigError
from tuneloop.monitor.commands import resolve_embedder
from tuneloop.monitor.metrics import MonitorMetrics, metrics_app, metrics_response
from tuneloop.monitor.reports import latest_drift, write_drift_report
from tuneloop.store import schema

from monitor_helpers import COOKING, SUPPORT, insert, interaction, queries


def samples(body: bytes) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}


def test_prometheus_text_has_our_metrics_on_our_own_registry():
    m = MonitorMetrics()
    m.observe_interaction({"version_id": "v1", "arm": "treatment", "latency_ms": 250.0})
    m.observe_interaction({"version_id": "v1", "arm": "treatment", "latency_ms": 50.0, "status": "error"})
    m.observe_interaction({"version_id": None, "latency_ms": None})
    m.observe_feedback({"kind": "thumbs", "source": "user"})
    body, ctype = metrics_response(m.registry)
    assert ctype.startswith("text/plain")
    s = samples(body)
    assert s[("tuneloop_interactions_total", (("arm", "treatment"), ("version", "v1")))] == 2
    assert s[("tuneloop_interactions_total", (("arm", "none"), ("version", "none")))] == 1
    assert s[("tuneloop_interaction_errors_total", (("version", "v1"),))] == 1
    assert s[("tuneloop_feedback_total", (("kind", "thumbs"), ("source", "user")))] == 1
    assert s[("tuneloop_latency_seconds_count", (("version", "v1"),))] == 2
    assert s[("tuneloop_latency_seconds_bucket", (("le", "0.1"), ("version", "v1")))] == 1
    assert b"tuneloop_" not in __import__("prometheus_client").generate_latest(REGISTRY)   # global one untouched


def test_drift_and_satisfaction_gauges_come_from_the_store(db):
    m = MonitorMetrics(db=db)
    assert b"tuneloop_drift_detected{" not in m.render()
    write_drift_report(db, "embedding", {}, {"methods": {"mmd": {"value": 0.004, "threshold": 0.001},
                                                         "ks": {"value": 0.5, "threshold": 0.2}}}, True)
    write_drift_report(db, "behaviour", {}, {"satisfaction": {"v1": {"satisfaction": 0.7}},
                                             "trend": {"slope_per_day": -0.01}}, True)
    s = samples(m.render())
    assert s[("tuneloop_drift_value", (("kind", "embedding"), ("method", "mmd")))] == pytest.approx(0.004)
    assert s[("tuneloop_drift_threshold", (("kind", "embedding"), ("method", "ks")))] == pytest.approx(0.2)
    assert s[("tuneloop_drift_detected", (("kind", "embedding"),))] == 1.0
    assert s[("tuneloop_satisfaction", (("version", "v1"),))] == pytest.approx(0.7)
    assert s[("tuneloop_drift_value", (("kind", "behaviour"), ("method", "satisfaction_slope_per_day")))] < 0


def test_metrics_asgi_app_serves_the_text():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    m = MonitorMetrics()
    m.observe_feedback({"kind": "copy"})
    app = FastAPI()
    app.mount("/metrics", metrics_app(m.registry))
    response = TestClient(app).get("/metrics/")
    assert response.status_code == 200 and "tuneloop_feedback_total" in response.text


def test_resolve_embedder_names_and_errors():
    assert resolve_embedder("hashing-32").encode(["a b", "c"]).shape == (2, 32)   # tuneloop.models.embed
    with pytest.raises(ConfigError, match="cannot load embedder"):
        resolve_embedder("no_such_module_xyz:Thing")
    sys.modules["monitor_bad_embedder"] = types.SimpleNamespace(Thing=object)
    with pytest.raises(ConfigError, match="no encode"):
        resolve_embedder("monitor_bad_embedder:Thing")


@pytest.fixture
def cli(db_url, embedder, monkeypatch):
    from tuneloop.cli import app

    monkeypatch.setitem(sys.modules, "monitor_test_embedder", types.SimpleNamespace(Hashing=type(embedder)))
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["--db", db_url, "monitor", *args])


def test_cli_drift_report_and_list(cli, db):
    rng = random.Random(0)
    day = 86400.0
    import time

    now = time.time()
    rows = [interaction(now - 8 * day + i * 60, q) for i, q in enumerate(queries(200, SUPPORT, rng))]
    rows += [interaction(now - day / 2 + i * 60, q) for i, q in enumerate(queries(150, COOKING, rng))]
    insert(db, schema.interactions, rows)
    result = cli("drift", "--reference-days", "7", "--current-days", "1", "--embedder",
                 "monitor_test_embedder:Hashing", "--methods", "ks,mmd,centroid", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["drifted"] and payload["n_current"] == 150 and set(payload["methods"]) == {"ks", "mmd", "centroid"}
    assert latest_drift(db).id == payload["id"]

    table = cli("drift", "--embedder", "monitor_test_embedder:Hashing", "--methods", "ks,mmd", "--no-write",
                "--fail-on-drift")
    assert table.exit_code == 1 and "DRIFT" in table.stdout and "mmd" in table.stdout

    report = cli("report", "--days", "30", "--topics", "--embedder", "hashing")
    assert report.exit_code == 0, report.output
    assert "behaviour" in report.stdout and "operations checks" in report.stdout
    listing = cli("list")
    assert listing.exit_code == 0 and "embedding" in listing.stdout and "operations" in listing.stdout


def test_cli_bad_input_exits_with_a_message(cli):
    result = cli("drift", "--embedder", "monitor_test_embedder:Hashing")
    assert result.exit_code == 1 and "at least 20 are needed" in result.output
