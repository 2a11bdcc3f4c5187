"""`tuneloop registry ...` through Typer's runner on a real database."""
from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from tuneloop.registry import Registry
from tuneloop.registry import commands


def test_registry_cli_flow(db, db_url, command_app):
    reg = Registry(db)
    reg.register("v1", backend="scripted", base_model="tiny")
    reg.register("v2", backend="scripted", base_model="tiny", parent_id="v1", lineage={"dataset": "d1"})
    runner, app = CliRunner(), command_app(commands)

    r = runner.invoke(app, ["registry", "promote", "v1", "--db", db_url])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["registry", "promote", "v2", "--reason", "better", "--db", db_url])
    assert r.exit_code == 0 and "v2" in r.output
    r = runner.invoke(app, ["registry", "list", "--json", "--db", db_url])
    rows = {v["id"]: v for v in json.loads(r.output)}
    assert rows["v2"]["aliases"] == ["champion"] and rows["v1"]["status"] == "archived"
    r = runner.invoke(app, ["registry", "show", "champion", "--json", "--db", db_url])
    shown = json.loads(r.output)
    assert shown["id"] == "v2" and shown["lineage"] == {"dataset": "d1"}
    assert any(h["action"] == "promote" for h in shown["history"])
    r = runner.invoke(app, ["registry", "rollback", "--db", db_url])
    assert r.exit_code == 0 and "v1" in r.output
    assert Registry(db).champion().id == "v1"
    r = runner.invoke(app, ["registry", "list", "--db", db_url])
    assert r.exit_code == 0 and "v1" in r.output and "champion" in r.output


def test_registry_cli_uses_ctx_db_and_reports_errors(db, command_app):
    runner, app = CliRunner(), command_app(commands)
    r = runner.invoke(app, ["registry", "rollback"], obj={"db": db})
    assert r.exit_code == 1 and "no previous" in r.output
    r = runner.invoke(app, ["registry", "show", "nope"], obj={"db": db})
    assert r.exit_code == 1 and "nope" in r.output
