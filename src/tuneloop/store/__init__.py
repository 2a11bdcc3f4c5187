"""Storage: the schema, engines (SQLite WAL by default, PostgreSQL by URL), migrations, locks."""
from tuneloop.store import schema
from tuneloop.store.db import DEFAULT_PATH, Database, resolve_url

__all__ = ["Database", "DEFAULT_PATH", "resolve_url", "schema"]
