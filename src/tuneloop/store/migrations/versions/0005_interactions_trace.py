"""interactions: an index to read one trace tree (``@trace`` spans and wrapped OpenAI calls)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 12:00:00

Every span of a traced request is an interactions row with the root's ``trace_id``; reading
a tree (``tuneloop.capture.trace_tree``) selects by it. Partial (``trace_id IS NOT NULL``):
rows logged without tracing, most of the table, cost the capture writer nothing extra.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_WHERE = sa.text("trace_id IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_interactions_trace", "interactions", ["trace_id", "ts"], unique=False,
                    sqlite_where=_WHERE, postgresql_where=_WHERE)


def downgrade() -> None:
    op.drop_index("ix_interactions_trace", table_name="interactions")
