"""`tuneloop experiment ...` and `tuneloop deploy` through Typer's runner on a real database."""
from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from tuneloop.config import Settings
from tuneloop.errors import ValidationError
from tuneloop.experiments import commands, records
from tuneloop.experiments.commands import parse_duration, parse_split

@pytest.fixture
def run(db, command_app):
    runner, app = CliRunner(), command_app(commands)
    settings = Settings(ab_test_config={"min_samples_per_version": 200})

    def invoke(*args: str, code: int = 0):
        r = runner.invoke(app, list(args), obj={"db": db, "settings": settings})
        assert r.exit_code == code, r.output
        return r.output
    return invoke


def test_start_analyze_promote_flow(db, reg, traffic, run):
    out = run("experiment", "start", "--control", "v1", "--treatment", "v2", "--split", "50/50",
              "--duration", "0h", "--mode", "ab")
    exp = records.running(db)[0]
    assert exp.id in out and exp.weights == {"control": 0.5, "treatment": 0.5}
    assert exp.config["min_duration_hours"] == 0 and exp.config["min_samples_per_version"] == 200
    traffic.run(1500, {"v1": 0.3, "v2": 0.6})
    out = run("experiment", "analyze", exp.id)
    for text in ("lift", "confidence sequence", "always-valid p", "SRM", "p95_latency_ratio", "promote"):
        assert text in out
    data = json.loads(run("experiment", "analyze", exp.id, "--json"))
    assert data["comparison"]["decision"] == "promote" and data["status"] == "running"
    assert exp.id in run("experiment", "status")
    listed = json.loads(run("experiment", "status", "--json"))
    assert [e["id"] for e in listed] == [exp.id] and listed[0]["status"] == "running"
    run("experiment", "promote", exp.id)
    assert reg.champion().id == "v2" and records.get(db, exp.id).status == "promoted"
    run("experiment", "rollback", exp.id)
    assert reg.champion().id == "v1"


def test_analyze_apply_acts_on_the_decision(db, reg, traffic, run):
    run("experiment", "start", "--treatment", "v2", "--split", "50/50", "--duration", "0")
    exp = records.running(db)[0]
    traffic.run(1500, {"v1": 0.6, "v2": 0.3})
    out = run("experiment", "analyze", exp.id, "--apply")
    assert "rolled_back" in out and reg.champion().id == "v1"


def test_deploy_traffic_levels(db, reg, run):
    run("deploy", "--version", "v2", "--traffic", "10")
    exp = records.running(db)[0]
    assert exp.weights == pytest.approx({"control": 0.9, "treatment": 0.1})
    run("deploy", "--version", "v2", "--traffic", "30")
    assert records.get(db, exp.id).weights == pytest.approx({"control": 0.7, "treatment": 0.3})
    run("deploy", "--version", "v2", "--traffic", "100")
    assert reg.champion().id == "v2" and records.get(db, exp.id).status == "promoted"
    reg.register("v3", backend="scripted")
    run("deploy", "--version", "v3", "--traffic", "100")
    assert reg.champion().id == "v3"
    out = run("deploy", "--version", "v3", "--traffic", "0", code=1)
    assert "no traffic" in out


def test_cli_errors_are_clear(db, reg, run):
    assert "split" in run("experiment", "start", "--treatment", "v2", "--split", "abc", code=1)
    assert "mode" in run("experiment", "start", "--treatment", "v2", "--mode", "split", code=1)
    assert "nope" in run("experiment", "analyze", "nope", code=1)
    assert "v9" in run("experiment", "start", "--treatment", "v9", code=1)


def test_parsers():
    assert parse_split("90/10") == 0.1 and parse_split("10%") == 0.1 and parse_split("10") == 0.1
    assert parse_duration("1w") == 168 and parse_duration("90m") == 1.5
    for bad in ("100/0", "x/y", "0"):
        with pytest.raises(ValidationError):
            parse_split(bad)
    with pytest.raises(ValidationError):
        parse_duration("soon")


def test_through_the_real_cli(db, db_url, reg, tmp_path):
    from tuneloop.cli import app

    config = tmp_path / "tuneloop.json"
    config.write_text(json.dumps({"ab_test_config": {"min_duration_hours": 0, "initial_challenger_traffic": 0.2}}))
    runner = CliRunner()
    r = runner.invoke(app, ["--db", db_url, "--config", str(config), "experiment", "start", "--treatment", "v2"])
    assert r.exit_code == 0, r.output
    exp = records.running(db)[0]
    assert exp.weights == pytest.approx({"control": 0.8, "treatment": 0.2}) and exp.config["min_duration_hours"] == 0
    r = runner.invoke(app, ["--db", db_url, "registry", "list", "--json"])
    assert r.exit_code == 0 and {v["id"] for v in json.loads(r.output)} == {"v1", "v2"}
    r = runner.invoke(app, ["--db", db_url, "deploy", "--version", "v2", "--traffic", "100"])
    assert r.exit_code == 0, r.output
    assert reg.champion().id == "v2"
