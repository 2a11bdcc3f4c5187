"""Where the logger's writer thread delivers batches: a database, or the ingestion API.

Both sinks have ``write(interactions, feedback)`` (raises on failure) and
``classify(exc)``, which tells the writer what a failure means:

- ``RETRY``  transient (connection refused, database locked, HTTP 429/5xx): back off, retry
- ``HOLD``   the receiver refuses us as a client (HTTP 401/403, or 404/405: a wrong
             endpoint): keep rows, spool, shout
- ``SPLIT``  the batch is too large (HTTP 413): send it in halves
- ``REJECT`` the data itself is bad (IntegrityError, DataError, HTTP 400/422): bisect the
             batch down to the rows that fail alone and keep those aside
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tuneloop.capture.records import encode_json, write_rows

RETRY, HOLD, SPLIT, REJECT = "retry", "hold", "split", "reject"
Row = Mapping[str, Any]

# Matched by class name along the MRO, so one rule covers SQLAlchemy's wrappers and the raw
# sqlite3/psycopg exceptions of the fast write paths. Only errors about the data itself
# reject rows; everything else (connection lost, database locked, a missing table during a
# migration) is retried with the rows kept.
_DATA_ERROR_NAMES = {"IntegrityError", "DataError"}


class DeliveryError(Exception):
    """A batch did not reach the ingestion API; ``kind`` is one of RETRY/HOLD/SPLIT/REJECT."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


class DatabaseSink:
    """Writes batches into a :class:`tuneloop.store.Database`, one transaction per batch."""

    remote = False

    def __init__(self, db: Any, *, owned: bool) -> None:
        self.db, self.owned = db, owned

    def write(self, interactions: Sequence[Row], feedback: Sequence[Row]) -> None:
        with self.db.begin() as conn:
            # Interactions first: feedback on an interaction of the same batch lands after it.
            write_rows(self.db, conn, "interactions", interactions)
            write_rows(self.db, conn, "feedback", feedback)

    @staticmethod
    def classify(exc: BaseException) -> str:
        names = {k.__name__ for k in type(exc).__mro__}
        if names & _DATA_ERROR_NAMES or isinstance(exc, (TypeError, ValueError, OverflowError)):
            return REJECT
        return RETRY

    def describe(self) -> str:
        return repr(self.db)

    def close(self) -> None:
        if self.owned:
            self.db.close()


def wire_interaction(row: Row) -> dict[str, Any]:
    """An interaction row as the ingestion API takes it: ``meta`` sent as ``metadata``,
    None values and ``dedupe_hash`` (the server recomputes it) left out."""
    out = {k: v for k, v in row.items() if v is not None and k not in ("dedupe_hash", "meta")}
    if row.get("meta"):
        out["metadata"] = row["meta"]
    return out


def wire_feedback(row: Row) -> dict[str, Any]:
    """A feedback row as the ingestion API takes it: ``interaction_id`` plus ``feedback_id``,
    the feedback's own id, which makes a replayed batch idempotent."""
    out = {k: v for k, v in row.items() if v is not None and k not in ("id", "meta")}
    out["feedback_id"] = row["id"]
    if row.get("meta"):
        out["metadata"] = row["meta"]
    return out


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: ignore, use our own backoff
        return None


class HttpSink:
    """POSTs batches to ``{endpoint}/v1/interactions`` and ``{endpoint}/v1/feedback``."""

    remote = True

    def __init__(self, endpoint: str, api_key: str | None, timeout: float = 10.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._client: Any = None

    def headers(self) -> dict[str, str]:
        h = {"content-type": "application/json", "user-agent": "tuneloop-sdk"}
        if self.api_key:
            h["authorization"] = f"Bearer {self.api_key}"
        return h

    def _http(self) -> Any:
        if self._client is None:
            import httpx  # imported here: local mode never needs it

            self._client = httpx.Client(timeout=self.timeout, headers=self.headers())
        return self._client

    def _post(self, path: str, payload: dict[str, Any]) -> None:
        import httpx

        url = self.endpoint + path
        body = encode_json(payload).encode()
        try:
            resp = self._http().post(url, content=body)
        except httpx.HTTPError as exc:
            raise DeliveryError(RETRY, f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
        status = resp.status_code
        if status < 300:
            return
        if status == 429 or status >= 500:
            kind = RETRY
        elif status in (401, 403, 404, 405):  # a bad key or a wrong endpoint: keep the rows
            kind = HOLD
        elif status == 413:
            kind = SPLIT
        else:
            kind = REJECT
        raise DeliveryError(kind, f"POST {url} answered {status}: {resp.text[:300]}",
                            retry_after=_retry_after(resp.headers.get("retry-after")))

    def write(self, interactions: Sequence[Row], feedback: Sequence[Row]) -> None:
        if interactions:
            self._post("/v1/interactions", {"interactions": [wire_interaction(r) for r in interactions]})
        if feedback:
            self._post("/v1/feedback", {"feedback": [wire_feedback(r) for r in feedback]})

    @staticmethod
    def classify(exc: BaseException) -> str:
        return exc.kind if isinstance(exc, DeliveryError) else RETRY

    def stats(self, since: Any = None) -> dict[str, Any]:
        """GET /v1/stats (a read-scope key is needed when the server checks keys)."""
        import httpx

        params = {} if since is None else {"since": str(since)}
        with httpx.Client(timeout=self.timeout, headers=self.headers()) as client:
            resp = client.get(self.endpoint + "/v1/stats", params=params)
            resp.raise_for_status()
            return resp.json()

    def describe(self) -> str:
        return self.endpoint

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
