"""`tuneloop train run|list|show` through Typer's runner on a real database."""
from __future__ import annotations

import json
import sys

import pytest
import typer
from typer.testing import CliRunner

from tuneloop.errors import ConfigError
from tuneloop.train import commands

SCRIPT = ("import json, pathlib, sys; out = pathlib.Path(sys.argv[1]); (out / 'model').mkdir(exist_ok=True); "
          "(out / 'model' / 'config.json').write_text('{}'); "
          "(out / 'metrics.json').write_text(json.dumps({'train_loss': 0.3}))")


def test_train_run_list_show(db, db_url, data_dir, tmp_path, command_app):
    runner, app = CliRunner(), command_app(commands)
    command = json.dumps([sys.executable, "-c", SCRIPT, "{output_dir}"])
    # A JSON list as --command keeps the script's spaces and quotes intact.
    r = runner.invoke(app, ["train", "run", "--data", str(data_dir / "sft.jsonl"), "--output", str(tmp_path / "o"),
                            "--backend", "command", "--command", command, "--set", "lr=0.01", "--db", db_url])
    assert r.exit_code == 0, r.output
    assert "succeeded" in r.output
    r = runner.invoke(app, ["train", "list", "--db", db_url])
    assert r.exit_code == 0 and "command" in r.output and "succeeded" in r.output
    run_id = db.fetch_all(commands.sa.select(commands.sa.text("id")).select_from(commands.sa.text("train_runs")))[0]["id"]
    r = runner.invoke(app, ["train", "show", run_id, "--db", db_url])
    shown = json.loads(r.output)
    assert shown["status"] == "succeeded" and shown["config"] == {"lr": 0.01}
    assert shown["metrics"]["train_loss_last"] == 0.3


def test_parse_sets_and_bad_backend():
    assert commands.parse_sets(["lora_r=8", "target_modules=[\"q_proj\"]", "method=dpo"]) == {
        "lora_r": 8, "target_modules": ["q_proj"], "method": "dpo"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        commands.parse_sets(["oops"])
    with pytest.raises(ConfigError, match="unknown backend"):
        commands.build_trainer("deepspeed", "sft", {}, None)
    with pytest.raises(ConfigError, match="unknown TRL config key"):
        commands.build_trainer("trl", "sft", {"lr": 1}, None)
