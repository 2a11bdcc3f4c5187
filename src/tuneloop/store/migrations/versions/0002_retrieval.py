"""retrieval: documents, retrieval logs, index builds

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('documents',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('meta', JSON, nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), server_default='1', nullable=False),
    sa.Column('deleted', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_documents'))
    )
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.create_index('ix_documents_updated_at', ['updated_at'], unique=False)

    op.create_table('retrieval_logs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('interaction_id', sa.String(length=64), nullable=True),
    sa.Column('ts', sa.Float(), nullable=False),
    sa.Column('query', sa.Text(), server_default='', nullable=False),
    sa.Column('retriever_version', sa.String(length=255), nullable=True),
    sa.Column('reranker_version', sa.String(length=255), nullable=True),
    sa.Column('doc_ids', JSON, nullable=True),
    sa.Column('scores', JSON, nullable=True),
    sa.Column('ranks', JSON, nullable=True),
    sa.Column('meta', JSON, nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_retrieval_logs'))
    )
    with op.batch_alter_table('retrieval_logs', schema=None) as batch_op:
        batch_op.create_index('ix_retrieval_logs_ts', ['ts'], unique=False)
        batch_op.create_index('ix_retrieval_logs_interaction', ['interaction_id'], unique=False)

    op.create_table('index_builds',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('embedder_version', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='building', nullable=False),
    sa.Column('engine', sa.String(length=32), nullable=True),
    sa.Column('dim', sa.Integer(), nullable=True),
    sa.Column('cursor', sa.String(length=255), nullable=True),
    sa.Column('done', sa.Integer(), server_default='0', nullable=False),
    sa.Column('total', sa.Integer(), nullable=True),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('meta', JSON, nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=True),
    sa.Column('switched_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_index_builds'))
    )
    with op.batch_alter_table('index_builds', schema=None) as batch_op:
        batch_op.create_index('ix_index_builds_version_status', ['embedder_version', 'status'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('index_builds', schema=None) as batch_op:
        batch_op.drop_index('ix_index_builds_version_status')
    op.drop_table('index_builds')
    with op.batch_alter_table('retrieval_logs', schema=None) as batch_op:
        batch_op.drop_index('ix_retrieval_logs_interaction')
        batch_op.drop_index('ix_retrieval_logs_ts')
    op.drop_table('retrieval_logs')
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_index('ix_documents_updated_at')
    op.drop_table('documents')
