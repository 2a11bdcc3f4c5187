"""CLI: tuneloop dataset build|list|show, rewards, judge, sample-for-annotation."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from tuneloop.cli import app

runner = CliRunner()


def test_dataset_build_list_show(db_url, db, add, interaction, tmp_path):
    add("interactions", [interaction(f"i{n}", f"Question {n}? mail x{n}@y.io", f"Answer {n}.") for n in range(6)])
    out = tmp_path / "sft.jsonl"
    r = runner.invoke(app, ["--db", db_url, "dataset", "build", "--kind", "sft", "--format", "messages",
                            "--output", str(out), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["final_count"] == 6 and res["pii"] == {"email": 6} and out.exists()
    r = runner.invoke(app, ["--db", db_url, "dataset", "list", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["id"] == res["dataset_id"]
    r = runner.invoke(app, ["--db", db_url, "dataset", "show", res["dataset_id"], "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["file_matches_hash"] is True
    r = runner.invoke(app, ["--db", db_url, "dataset", "build", "--kind", "dpo", "--format", "chatml",
                            "--output", str(tmp_path / "x.jsonl")])
    assert r.exit_code == 1 and "format" in r.output
    r = runner.invoke(app, ["--db", db_url, "dataset", "show", "nope"])
    assert r.exit_code == 1


def test_rewards_judge_and_sampling_commands(db_url, db, add, interaction):
    add("interactions", [interaction("a", "Capital of France?", "Paris", quality_score=None, user_id="u",
                                     session_id="s", ts=10.0),
                         interaction("b", "Capital of France??", "Paris!", quality_score=None, user_id="u",
                                     session_id="s", ts=15.0)])
    r = runner.invoke(app, ["--db", db_url, "rewards"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"regenerate": 1, "continued": 0, "rewards_updated": 1, "watermark": 15.0}
    r = runner.invoke(app, ["--db", db_url, "judge", "--heuristics-only"])
    assert r.exit_code == 0 and json.loads(r.stdout)["scored"] == 2
    r = runner.invoke(app, ["--db", db_url, "sample-for-annotation", "--count", "1"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["queued"] == 1
