"""The whole data model as SQLAlchemy Core tables: one schema for SQLite and PostgreSQL.

Conventions:
- ids are strings (UUIDv7 from :func:`tuneloop.ids.new_id`, or a user-chosen name for
  model versions); timestamps are ``Float`` seconds since the epoch, UTC (cheap to write
  in bulk, comparable on both databases).
- JSON columns use ``sa.JSON`` (JSONB on PostgreSQL).
- Only ``store/`` defines tables; domain packages import them from here.
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.String(64)


def _ts(name: str = "ts", **kw) -> sa.Column:
    return sa.Column(name, sa.Float, **kw)


interactions = sa.Table(
    "interactions", metadata,
    sa.Column("id", ID, primary_key=True),
    _ts(nullable=False),
    sa.Column("kind", sa.String(16), nullable=False, server_default="chat"),  # chat | span | retrieval
    sa.Column("user_id", sa.String(255)),
    sa.Column("session_id", sa.String(255)),
    sa.Column("trace_id", ID),
    sa.Column("parent_id", ID),
    sa.Column("model", sa.String(255), nullable=False, server_default=""),
    sa.Column("expert", sa.String(255)),
    sa.Column("version_id", ID),
    sa.Column("experiment_id", ID),
    sa.Column("arm", sa.String(32)),
    sa.Column("query", sa.Text, nullable=False, server_default=""),
    sa.Column("messages", JSON),
    sa.Column("response", sa.Text, nullable=False, server_default=""),
    sa.Column("latency_ms", sa.Float),
    sa.Column("token_count", sa.Integer),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("cost", sa.Float),
    sa.Column("status", sa.String(16), nullable=False, server_default="ok"),  # ok | error
    sa.Column("error", sa.Text),
    sa.Column("meta", JSON),
    sa.Column("quality_score", sa.Float),
    sa.Column("reward", sa.Float),
    sa.Column("failure_category", sa.String(64)),
    sa.Column("dedupe_hash", sa.String(64)),
    sa.Column("consent", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Index("ix_interactions_ts", "ts"),
    sa.Index("ix_interactions_user_session", "user_id", "session_id", "ts"),
    sa.Index("ix_interactions_version_ts", "version_id", "ts"),
    sa.Index("ix_interactions_experiment_arm", "experiment_id", "arm"),
    sa.Index("ix_interactions_dedupe_hash", "dedupe_hash"),
    # migration 0005: one trace tree by its root's id; partial, so untraced rows cost nothing
    sa.Index("ix_interactions_trace", "trace_id", "ts", sqlite_where=sa.text("trace_id IS NOT NULL"),
             postgresql_where=sa.text("trace_id IS NOT NULL")),
)

feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("interaction_id", ID, nullable=False),
    # thumbs (+1/0/-1) | rating (1-5) | comment | report | regenerate | copy | dwell | continue | session | pairwise
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("text", sa.Text),
    sa.Column("source", sa.String(32), nullable=False, server_default="user"),  # user | implicit | judge | annotator
    sa.Column("user_id", sa.String(255)),
    _ts(nullable=False),
    sa.Column("meta", JSON),
    sa.Index("ix_feedback_interaction", "interaction_id"),
    sa.Index("ix_feedback_ts", "ts"),
)

model_versions = sa.Table(
    "model_versions", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False, server_default="generator"),  # generator | retriever | reranker | prompt
    sa.Column("backend", sa.String(32), nullable=False, server_default="local"),  # local | openai | scripted
    sa.Column("base_model", sa.Text),
    sa.Column("adapter_path", sa.Text),
    sa.Column("model_path", sa.Text),
    sa.Column("prompt", JSON),  # system prompt, template, few-shot examples
    sa.Column("params", JSON),  # sampling params and backend options
    sa.Column("parent_id", ID),
    sa.Column("dataset_id", ID),
    sa.Column("train_run_id", ID),
    sa.Column("metrics", JSON),
    sa.Column("lineage", JSON),
    sa.Column("status", sa.String(16), nullable=False, server_default="candidate"),  # candidate | active | archived | rejected
    sa.Column("tainted", sa.Boolean, nullable=False, server_default=sa.false()),
    _ts("created_at", nullable=False),
)

aliases = sa.Table(
    "aliases", metadata,
    sa.Column("name", sa.String(64), primary_key=True),  # champion | challenger | shadow | <kind>:champion
    sa.Column("version_id", ID, nullable=False),
    sa.Column("previous_version_id", ID),
    _ts("updated_at", nullable=False),
)

experiments = sa.Table(
    "experiments", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(255)),
    sa.Column("mode", sa.String(16), nullable=False),  # ab | canary | shadow | bandit
    sa.Column("control_id", ID, nullable=False),
    sa.Column("treatment_id", ID, nullable=False),
    sa.Column("weights", JSON),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="running"),  # running | promoted | rolled_back | stopped
    sa.Column("config", JSON),
    sa.Column("state", JSON),  # canary step, bandit posteriors
    sa.Column("decision", JSON),
    _ts("started_at", nullable=False),
    _ts("ended_at"),
)

datasets = sa.Table(
    "datasets", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # sft | dpo | kto | triplets | reranker
    sa.Column("format", sa.String(32)),
    sa.Column("path", sa.Text),
    sa.Column("content_hash", sa.String(64)),
    sa.Column("row_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("config", JSON),
    sa.Column("counts", JSON),
    sa.Column("tainted", sa.Boolean, nullable=False, server_default=sa.false()),
    _ts("created_at", nullable=False),
)

dataset_members = sa.Table(
    "dataset_members", metadata,
    sa.Column("dataset_id", ID, primary_key=True),
    sa.Column("interaction_id", ID, primary_key=True),
    sa.Column("role", sa.String(16), nullable=False, server_default="train"),  # train | validation | chosen | rejected
    sa.Index("ix_dataset_members_interaction", "interaction_id"),
)

train_runs = sa.Table(
    "train_runs", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("dataset_id", ID),
    sa.Column("backend", sa.String(32), nullable=False),
    sa.Column("method", sa.String(16)),  # sft | dpo | kto | retriever | prompt | command | callable
    sa.Column("base_model", sa.Text),
    sa.Column("config", JSON),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),  # pending | running | succeeded | failed
    sa.Column("metrics", JSON),
    sa.Column("output_dir", sa.Text),
    sa.Column("log_path", sa.Text),
    sa.Column("version_id", ID),
    sa.Column("error", sa.Text),
    _ts("started_at"),
    _ts("ended_at"),
)

eval_runs = sa.Table(
    "eval_runs", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("version_id", ID, nullable=False),
    sa.Column("baseline_id", ID),
    sa.Column("golden_set", sa.String(255)),
    sa.Column("golden_version", sa.Integer),
    sa.Column("n", sa.Integer, nullable=False, server_default="0"),
    sa.Column("pass_rate", sa.Float),
    sa.Column("metrics", JSON),
    sa.Column("results", JSON),
    sa.Column("gate", JSON),
    sa.Column("passed", sa.Boolean),
    _ts("created_at", nullable=False),
)

golden_examples = sa.Table(
    "golden_examples", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("set_name", sa.String(255), nullable=False, server_default="default"),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("messages", JSON),
    sa.Column("expected", sa.Text),
    sa.Column("checker", sa.String(32), nullable=False, server_default="exact"),
    sa.Column("checker_args", JSON),
    sa.Column("tags", JSON),
    sa.Column("status", sa.String(16), nullable=False, server_default="approved"),  # proposed | approved | rejected
    sa.Column("source_interaction_id", ID),
    _ts("created_at", nullable=False),
    sa.Index("ix_golden_examples_set_status", "set_name", "status"),
)

annotations = sa.Table(
    "annotations", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("interaction_id", ID),
    sa.Column("kind", sa.String(16), nullable=False),  # rating | pairwise
    sa.Column("prompt", sa.Text),
    sa.Column("response_a", sa.Text),
    sa.Column("response_b", sa.Text),
    sa.Column("choice", sa.String(16)),  # a | b | equal | both_bad | skip
    sa.Column("value", sa.Float),
    sa.Column("text", sa.Text),
    sa.Column("annotator", sa.String(255)),
    sa.Column("status", sa.String(16), nullable=False, server_default="queued"),  # queued | done | skipped
    sa.Column("priority", sa.Float),
    sa.Column("reason", sa.String(64)),
    sa.Column("meta", JSON),
    _ts("created_at", nullable=False),
    _ts("done_at"),
    sa.Index("ix_annotations_status_priority", "status", "priority"),
)

drift_reports = sa.Table(
    "drift_reports", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),  # embedding | behaviour | operations | retrieval
    sa.Column("window", JSON),
    sa.Column("metrics", JSON),
    sa.Column("drifted", sa.Boolean, nullable=False, server_default=sa.false()),
    _ts("created_at", nullable=False),
)

trigger_events = sa.Table(
    "trigger_events", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("fired", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("details", JSON),
    _ts(nullable=False),
)

loop_runs = sa.Table(
    "loop_runs", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("trigger_event_id", ID),
    sa.Column("dataset_id", ID),
    sa.Column("train_run_id", ID),
    sa.Column("version_id", ID),
    sa.Column("eval_run_id", ID),
    sa.Column("experiment_id", ID),
    sa.Column("decision", sa.String(32)),
    sa.Column("details", JSON),
    sa.Column("error", sa.Text),
    _ts("started_at", nullable=False),
    _ts("updated_at", nullable=False),
    _ts("ended_at"),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    _ts(nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(255)),
    sa.Column("before", JSON),
    sa.Column("after", JSON),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(255)),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("scope", sa.String(16), nullable=False),  # ingest | read | admin
    _ts("created_at", nullable=False),
    _ts("revoked_at"),
    _ts("last_used_at"),
)

subjects = sa.Table(
    "subjects", metadata,
    sa.Column("user_id", sa.String(255), primary_key=True),
    sa.Column("consent_training", sa.Boolean, nullable=False, server_default=sa.true()),
    _ts("deleted_at"),
    _ts("created_at", nullable=False),
    _ts("updated_at"),
)

# ---------------------------------------------------------------- retrieval (migration 0002)
documents = sa.Table(
    "documents", metadata,
    sa.Column("id", sa.String(255), primary_key=True),  # the user's document id
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("meta", JSON),
    sa.Column("content_hash", sa.String(64), nullable=False),  # sha256 of text + meta: unchanged docs are not re-embedded
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),  # +1 on every change
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),  # soft delete: indexes see it
    _ts("updated_at", nullable=False),
    _ts("created_at", nullable=False),
    sa.Index("ix_documents_updated_at", "updated_at"),
)

retrieval_logs = sa.Table(
    "retrieval_logs", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("interaction_id", ID),
    _ts(nullable=False),
    sa.Column("query", sa.Text, nullable=False, server_default=""),
    sa.Column("retriever_version", sa.String(255)),
    sa.Column("reranker_version", sa.String(255)),
    sa.Column("doc_ids", JSON),
    sa.Column("scores", JSON),
    sa.Column("ranks", JSON),
    sa.Column("meta", JSON),  # k, latency, index build, client reports (used / clicked / skipped)
    sa.Index("ix_retrieval_logs_ts", "ts"),
    sa.Index("ix_retrieval_logs_interaction", "interaction_id"),
)

index_builds = sa.Table(
    "index_builds", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("embedder_version", sa.String(255), nullable=False),  # a retriever version id or an embedder name
    sa.Column("status", sa.String(16), nullable=False, server_default="building"),  # building | ready | active | standby | retired | failed
    sa.Column("engine", sa.String(32)),
    sa.Column("dim", sa.Integer),
    sa.Column("cursor", sa.String(255)),  # last document id embedded: a re-embed resumes after it
    sa.Column("done", sa.Integer, nullable=False, server_default="0"),
    sa.Column("total", sa.Integer),
    sa.Column("path", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("meta", JSON),
    _ts("created_at", nullable=False),
    _ts("updated_at"),
    _ts("switched_at"),
    sa.Index("ix_index_builds_version_status", "embedder_version", "status"),
)

# ---------------------------------------------------------------- notifications (migration 0004)
webhook_deliveries = sa.Table(
    "webhook_deliveries", metadata,
    sa.Column("id", ID, primary_key=True),  # uuid5(hook, event, subject): one delivery per event and hook
    sa.Column("hook", sa.String(64), nullable=False),  # the webhook's name (default: a hash of its URL)
    sa.Column("url", sa.Text, nullable=False),  # scheme, host and path only: query strings may hold tokens
    sa.Column("event", sa.String(32), nullable=False),  # promotion | rollback | gate_failure | drift_alert | approval_request
    sa.Column("subject", sa.String(255), nullable=False),  # what happened: audit:<id>, eval_run:<id>, ...
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),  # pending | sending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("response_status", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("payload", JSON),
    _ts("created_at", nullable=False),
    _ts("updated_at"),
    _ts("delivered_at"),
    sa.Index("ix_webhook_deliveries_status", "status", "updated_at"),
    sa.Index("ix_webhook_deliveries_event_created", "event", "created_at"),
)
