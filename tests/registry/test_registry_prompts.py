"""Prompt versions in the registry: validated specs, the lever that made a version, `registry prompt`."""
from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from tuneloop.errors import ConflictError, ValidationError
from tuneloop.registry import Registry, commands


def test_prompts_are_validated_and_stored_as_specs(db):
    reg = Registry(db)
    v = reg.register("v1", backend="scripted", prompt="Be brief.")
    assert v.prompt == {"system": "Be brief."} and v.prompt_spec.system == "Be brief."
    with pytest.raises(ValidationError, match="must contain {input}"):
        reg.register("v2", backend="scripted", prompt={"template": "no slot"})
    with pytest.raises(ValidationError, match="unknown sampling parameter"):
        reg.register("v2", backend="scripted", prompt={"system": "x", "sampling": {"temp": 1}})
    assert reg.find("v2") is None  # nothing half-registered
    assert reg.register("v3", backend="scripted", prompt={}).prompt is None


def test_register_prompt_serves_the_parents_weights_with_a_new_prompt(db):
    reg = Registry(db)
    reg.register("v1", backend="local", base_model="tiny", adapter_path="/runs/a1", params={"max_tokens": 8})
    reg.promote("v1")
    v2 = reg.register_prompt("v2", {"system": "Number only.", "sampling": {"temperature": 0.1}})
    assert (v2.kind, v2.backend, v2.base_model, v2.adapter_path, v2.params, v2.parent_id) == \
        ("generator", "local", "tiny", "/runs/a1", {"max_tokens": 8}, "v1")
    assert v2.lever == "prompt" and v2.lineage == {"lever": "prompt", "parent": "v1"}
    assert reg.get("v1").lever == "adapter"  # read off its columns: no lineage lever recorded
    with pytest.raises(ConflictError, match="already serves this prompt"):
        reg.register_prompt("v3", {"system": "Number only.", "sampling": {"temperature": 0.1}, "name": "dupe"},
                            parent="v2")
    with pytest.raises(ValidationError, match="needs a system prompt"):
        reg.register_prompt("v3", {"name": "nothing"})


def test_registry_prompt_command_and_list_show_the_lever(db, db_url, tmp_path, command_app):
    reg = Registry(db)
    reg.register("v1", backend="scripted", base_model="tiny")
    reg.promote("v1")
    (tmp_path / "p.yaml").write_text("name: number-only\nsystem: Answer with the number only.\n"
                                     "few_shot:\n  - {user: '1+1=', assistant: '2'}\n")
    runner, app = CliRunner(), command_app(commands)
    r = runner.invoke(app, ["registry", "prompt", "v2", "--file", str(tmp_path / "p.yaml"), "--db", db_url],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "a prompt over v1" in r.output and "tuneloop deploy --version v2" in r.output, r.output
    r = runner.invoke(app, ["registry", "prompt", "v3", "--system", "Be brief.", "--parent", "v2", "--db", db_url])
    assert r.exit_code == 0, r.output
    assert Registry(db).get("v3").prompt == {"system": "Be brief."} and Registry(db).get("v3").parent_id == "v2"
    r = runner.invoke(app, ["registry", "list", "--json", "--db", db_url])
    rows = {v["id"]: v for v in json.loads(r.output)}
    assert rows["v2"]["lever"] == "prompt" and rows["v1"]["lever"] == "base"
    assert rows["v2"]["prompt"]["few_shot"] == [{"user": "1+1=", "assistant": "2"}]
    r = runner.invoke(app, ["registry", "list", "--db", db_url], env={"COLUMNS": "200"})
    assert "generator/prompt" in r.output and "number-only" in r.output
    r = runner.invoke(app, ["registry", "show", "v2", "--db", db_url], env={"COLUMNS": "200"})
    assert "prompt (over v1)" in r.output
    r = runner.invoke(app, ["registry", "prompt", "v4", "--db", db_url])
    assert r.exit_code == 1 and "exactly one of --file or --system" in r.output
    (tmp_path / "bad.yaml").write_text("template: no slot\n")
    r = runner.invoke(app, ["registry", "prompt", "v4", "--file", str(tmp_path / "bad.yaml"), "--db", db_url])
    assert r.exit_code == 1 and "must contain {input}" in r.output
