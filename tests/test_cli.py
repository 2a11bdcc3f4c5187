import json
import socket
import subprocess
import sys
import time

import httpx
import pytest
import sqlalchemy as sa
import typer
from typer.main import get_command
from typer.testing import CliRunner

from tuneloop.capture.records import interaction_row, write_interactions
from tuneloop.cli import PLUGIN_MODULES, app, register_plugins
from tuneloop.store import schema

runner = CliRunner()


def _walk(cmd, path=()):
    yield path
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _walk(sub, (*path, name))


def test_every_command_has_help():
    paths = list(_walk(get_command(app)))
    names = {" ".join(p) for p in paths}
    assert {"serve", "stats", "keys create", "keys list", "keys revoke", "db upgrade", "export"} <= names
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


def test_keys_create_list_revoke(db_url, db):
    r = runner.invoke(app, ["--db", db_url, "keys", "create", "--scope", "ingest", "--name", "ci"])
    assert r.exit_code == 0, r.output
    raw = next(line for line in r.stdout.splitlines() if line.startswith("tl_ingest_"))
    from tuneloop.server.keys import verify_key

    key = verify_key(db, raw)
    assert key.name == "ci"
    r = runner.invoke(app, ["--db", db_url, "keys", "create", "--scope", "read", "-q"])
    assert r.exit_code == 0 and r.stdout.strip().startswith("tl_read_")
    r = runner.invoke(app, ["--db", db_url, "keys", "list"])
    assert r.exit_code == 0 and "ci" in r.stdout and raw not in r.stdout
    r = runner.invoke(app, ["--db", db_url, "keys", "revoke", key.id])
    assert r.exit_code == 0 and "Revoked" in r.stdout
    assert db.fetch_one(sa.select(schema.api_keys).where(schema.api_keys.c.id == key.id))["revoked_at"]
    r = runner.invoke(app, ["--db", db_url, "keys", "revoke", "no-such-key"])
    assert r.exit_code == 1 and "NotFoundError" in r.output
    r = runner.invoke(app, ["--db", db_url, "keys", "create", "--scope", "root"])
    assert r.exit_code == 2


def _seed(db):
    rows = [interaction_row(query=f"q{i}", response="a", model="m1" if i % 2 else "m2", latency_ms=float(i),
                            ts=1704067200.0 + i * 86400, messages=[{"role": "user", "content": f"q{i}"}])
            for i in range(10)]  # 2024-01-01 ... 2024-01-10, one a day
    write_interactions(db, rows)
    return rows


def test_stats(db_url, db):
    _seed(db)
    r = runner.invoke(app, ["--db", db_url, "stats", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["total"] == 10 and s["models"] == {"m1": 5, "m2": 5}
    r = runner.invoke(app, ["--db", db_url, "stats"])
    assert r.exit_code == 0 and "latency_p99" in r.stdout
    since = str(1704067200.0 + 5 * 86400)
    assert json.loads(runner.invoke(app, ["--db", db_url, "stats", "--json", "--since", since]).stdout)["total"] == 5
    assert json.loads(runner.invoke(app, ["--db", db_url, "stats", "--json", "--since", "2024-01-09"]).stdout)["total"] == 2


def test_db_upgrade(db_url, db):
    from tuneloop.store.migrate import current

    r = runner.invoke(app, ["--db", db_url, "db", "upgrade"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().endswith(f"-> {current(db.engine)}")


def test_export_jsonl_and_parquet(db_url, db, tmp_path):
    _seed(db)
    out = tmp_path / "out" / "week.jsonl"
    r = runner.invoke(app, ["--db", db_url, "export", "--start-date", "2024-01-03", "--end-date", "2024-01-07",
                            "--output", str(out)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["query"] for x in lines] == ["q2", "q3", "q4", "q5", "q6"]  # the end day is included
    assert lines[0]["messages"] == [{"role": "user", "content": "q2"}]
    assert "5 interactions exported" in r.stdout
    pq_out = tmp_path / "all.parquet"
    r = runner.invoke(app, ["--db", db_url, "export", "--model", "m1", "--output", str(pq_out)])
    assert r.exit_code == 0, r.output
    import pyarrow.parquet as pq

    table = pq.read_table(pq_out)
    assert table.num_rows == 5 and set(table.column("model").to_pylist()) == {"m1"}
    assert json.loads(table.column("messages")[0].as_py())[0]["role"] == "user"
    assert table.schema.field("latency_ms").type == "double"
    assert not list(tmp_path.rglob("*.tmp"))  # written beside, then renamed


def test_export_refuses_bad_arguments(db_url, tmp_path):
    r = runner.invoke(app, ["--db", db_url, "export", "--output", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and ".jsonl or .parquet" in r.output
    r = runner.invoke(app, ["--db", db_url, "export", "--start-date", "last week", "--output",
                            str(tmp_path / "x.jsonl")])
    assert r.exit_code == 1 and "start" in r.output
    assert not list(tmp_path.glob("*.jsonl")) and not list(tmp_path.glob("*.tmp"))


def test_config_file_and_bad_config(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'db_path = "{tmp_path / "from_config.db"}"\n')
    r = runner.invoke(app, ["--config", str(cfg), "db", "upgrade"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "from_config.db").exists()
    cfg.write_text("prot = 1\n")
    r = runner.invoke(app, ["--config", str(cfg), "stats"])
    assert r.exit_code == 1 and "prot" in r.output


def test_register_plugins(tmp_path, monkeypatch):
    pkg = tmp_path / "tlplug"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text("def register(app):\n    @app.command()\n    def hello():\n        print('hi')\n")
    (pkg / "broken.py").write_text("import tlplug.not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    target = typer.Typer()

    @target.command()
    def other():
        pass

    assert register_plugins(target, ["tlplug.missing", "nopkg_xyz.commands", "tlplug.good"]) == ["tlplug.good"]
    assert runner.invoke(target, ["hello"]).stdout.strip() == "hi"
    with pytest.raises(ModuleNotFoundError, match="not_there"):
        register_plugins(target, ["tlplug.broken"])
    assert "tuneloop.experiments.commands" in PLUGIN_MODULES


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_serve_runs_uvicorn(db_url, workers, tmp_path):
    port = _free_port()
    log = open(tmp_path / "serve.log", "wb")  # a file, not a pipe: a full pipe would stall the server
    proc = subprocess.Popen([sys.executable, "-m", "tuneloop.cli", "--db", db_url, "serve", "--port", str(port),
                             "--workers", str(workers)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
        assert r.json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/v1/stats").status_code == 401  # auth is on by default
        r = httpx.post(f"http://127.0.0.1:{port}/v1/interactions", json={"query": "q"}, timeout=5)
        assert r.status_code == 401
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
