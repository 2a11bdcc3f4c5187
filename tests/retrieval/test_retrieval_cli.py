"""``tuneloop docs ...`` against a real database and index."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from tuneloop.cli import app

from retrieval_helpers import DOCS

runner = CliRunner()


def test_docs_add_search_delete_builds_reembed_switch_rollback(db_url, tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    base = ["--db", db_url, "docs"]
    opts = ["--embedder", "hashing-128", "--index-dir", str(tmp_path / "ix")]
    r = runner.invoke(app, [*base, "add", str(f), *opts])
    assert r.exit_code == 0, r.output
    assert "added 5" in r.output
    r = runner.invoke(app, [*base, "add", str(f), *opts])
    assert "unchanged 5" in r.output
    r = runner.invoke(app, [*base, "search", "reset account password", "-k", "2", "--json",
                            "--index-dir", str(tmp_path / "ix")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["hits"][0]["id"] == "pw" and out["retriever_version"] == "hashing-128"
    r = runner.invoke(app, [*base, "delete", "pw", "nope", *opts])
    assert r.exit_code == 0 and "deleted 1; not found: nope" in r.output
    assert runner.invoke(app, [*base, "delete", "nope", *opts]).exit_code == 1
    r = runner.invoke(app, [*base, "reembed", "--embedder", "hashing-64", "--index-dir", str(tmp_path / "ix")])
    assert r.exit_code == 0 and "ready, 4 documents" in r.output
    r = runner.invoke(app, [*base, "switch", "hashing-64"])
    assert r.exit_code == 0 and "serving hashing-64" in r.output
    r = runner.invoke(app, [*base, "builds", "--json"])
    statuses = {b["embedder_version"]: b["status"] for b in json.loads(r.output)}
    assert statuses == {"hashing-64": "active", "hashing-128": "standby"}
    r = runner.invoke(app, [*base, "rollback", "--index-only"])
    assert r.exit_code == 0 and "serving hashing-128" in r.output
    r = runner.invoke(app, [*base, "switch", "hashing-999"])
    assert r.exit_code == 1 and "no ready index" in r.output


def test_bad_file_and_golden_import(db_url, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    r = runner.invoke(app, ["--db", db_url, "docs", "add", str(bad), "--embedder", "hashing-32",
                            "--index-dir", str(tmp_path / "ix")])
    flat = r.output.replace("\n", "")  # rich wraps long paths at the terminal width
    assert r.exit_code == 1 and "bad.jsonl:1" in flat and "'text'" in flat
    g = tmp_path / "golden.jsonl"
    g.write_text(json.dumps({"query": "reset password", "relevant": ["pw"]}) + "\n")
    r = runner.invoke(app, ["--db", db_url, "docs", "golden", str(g)])
    assert r.exit_code == 0 and "added 1 retrieval cases" in r.output
