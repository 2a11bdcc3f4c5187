"""tuneloop user delete|consent|show, tuneloop retention run, tuneloop audit list."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.ids import now

from .conftest import add_traffic

runner = CliRunner()


def _run(db_url, *args, input=None):
    return runner.invoke(app, ["--db", db_url, *args], input=input)


def test_user_delete_consent_show_and_audit(db, db_url, world):
    r = _run(db_url, "user", "consent", "u2", "--no-training", "--actor", "cli:ana")
    assert r.exit_code == 0 and "withdrawn" in r.output
    r = _run(db_url, "user", "delete", "u1", input="n\n")  # asks first; "n" aborts
    assert r.exit_code == 1 and "Aborted" in r.output
    r = _run(db_url, "user", "delete", "u1", "--yes", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["interactions"] == 3 and report["tainted_datasets"] == [world.d_both]
    assert report["actor"].startswith("cli")
    r = _run(db_url, "user", "delete", "u1", "--yes")
    assert r.exit_code == 0 and "already deleted" in r.output
    r = _run(db_url, "user", "show", "u1", "--json")
    assert json.loads(r.output)["deleted"] is True
    r = _run(db_url, "audit", "list", "--action", "user.", "--json")
    actions = [e["action"] for e in json.loads(r.output)]
    assert actions.count("user.delete") == 2 and "user.consent" in actions
    r = _run(db_url, "audit", "list", "--target", "user:u2")
    assert r.exit_code == 0 and "cli:ana" in r.output


def test_consent_on_a_deleted_user_is_a_clear_error(db, db_url):
    _run(db_url, "user", "delete", "gone", "--yes")
    r = _run(db_url, "user", "consent", "gone", "--training")
    assert r.exit_code == 1 and "was deleted" in r.output


def test_retention_run(db, db_url):
    add_traffic(db, "old", 3, ts=now() - 100 * 86_400)
    add_traffic(db, "new", 2)
    r = _run(db_url, "retention", "run", "--days", "30")
    assert r.exit_code == 0, r.output
    assert "deleted 3 interactions" in r.output
    r = _run(db_url, "retention", "run")
    assert r.exit_code == 1 and "--days" in r.output
