"""audit_log is append-only: triggers refuse UPDATE and DELETE

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 15:40:00

The application only ever inserts audit rows; these triggers make the database refuse
anything else, so a bug, an API route or a stray ``UPDATE`` cannot rewrite history.
TRUNCATE is not blocked on PostgreSQL (it is a table owner's maintenance operation and
the test suite's reset); revoke it from the application role where that matters.
"""
from typing import Sequence, Union

from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_MESSAGE = "audit_log is append-only: rows cannot be updated or deleted"

_SQLITE_UP = [
    f"""CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END""",
]
_SQLITE_DOWN = ["DROP TRIGGER IF EXISTS audit_log_no_update", "DROP TRIGGER IF EXISTS audit_log_no_delete"]

_PG_UP = [
    f"""CREATE OR REPLACE FUNCTION tuneloop_audit_log_immutable() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '{_MESSAGE}' USING ERRCODE = 'insufficient_privilege';
        END $$""",
    "DROP TRIGGER IF EXISTS audit_log_immutable ON audit_log",
    """CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION tuneloop_audit_log_immutable()""",
]
_PG_DOWN = ["DROP TRIGGER IF EXISTS audit_log_immutable ON audit_log",
            "DROP FUNCTION IF EXISTS tuneloop_audit_log_immutable()"]


def _run(statements: list[str]) -> None:
    for sql in statements:
        op.execute(sql)


def upgrade() -> None:
    name = op.get_bind().dialect.name
    if name == "sqlite":
        _run(_SQLITE_UP)
    elif name == "postgresql":
        _run(_PG_UP)


def downgrade() -> None:
    name = op.get_bind().dialect.name
    if name == "sqlite":
        _run(_SQLITE_DOWN)
    elif name == "postgresql":
        _run(_PG_DOWN)
