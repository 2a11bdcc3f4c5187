"""Retrieval-augmented generation: put retrieved passages into a model version's prompt.

A model version names its retriever in ``params["retrieval"]``::

    {"retrieval": {"k": 4, "rerank": false, "filter": {"lang": "en"},
                   "template": "Answer from these passages:\\n{context}\\n\\nQuestion: {query}"}}

The gateway calls :func:`augment` with the chat messages before the model call: the last
user message is the query; the passages go into a system message rendered from
``template`` (``{context}``, ``{query}``), and the search is logged against the
interaction id so the client's later feedback trains the retriever.

>>> msgs = [{"role": "user", "content": "how do refunds work?"}]
>>> render_context("{context}", [{"id": "d1", "text": "Refunds take 10 days."}])
'[1] (d1) Refunds take 10 days.'
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tuneloop.errors import ValidationError

__all__ = ["DEFAULT_TEMPLATE", "render_context", "augment", "retrieval_params"]

DEFAULT_TEMPLATE = ("Use the following passages to answer. Cite them by number; say so if they do not "
                    "contain the answer.\n\n{context}")


def render_context(template: str, hits: Sequence[Any], query: str = "", max_chars: int = 1500) -> str:
    """The template with ``{context}`` = numbered passages and ``{query}`` = the question."""
    lines = []
    for i, h in enumerate(hits, 1):
        doc_id = h["id"] if isinstance(h, Mapping) else h.id
        text = h["text"] if isinstance(h, Mapping) else h.text
        lines.append(f"[{i}] ({doc_id}) {text[:max_chars]}")
    try:
        return template.format(context="\n".join(lines), query=query)
    except (KeyError, IndexError) as exc:
        raise ValidationError(f"retrieval template has an unknown field {exc}; use {{context}} and {{query}}",
                              field="template") from None


def retrieval_params(version_params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``retrieval`` block of a model version's params (None: the version does no retrieval)."""
    block = (version_params or {}).get("retrieval")
    if block is None or block is False:
        return None
    if block is True:
        return {}
    if not isinstance(block, Mapping):
        raise ValidationError("params.retrieval must be an object (k, rerank, filter, template)", field="retrieval")
    return dict(block)


def augment(index: Any, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None, *,
            interaction_id: str | None = None) -> tuple[list[dict[str, Any]], Any]:
    """(messages with a context system message, the RetrievalResult) — unchanged messages when no params."""
    cfg = retrieval_params({"retrieval": params} if params is not None else None)
    msgs = [dict(m) for m in messages]
    if cfg is None:
        return msgs, None
    query = next((m.get("content") for m in reversed(msgs) if m.get("role") == "user"
                  and isinstance(m.get("content"), str)), None)
    if not query or not query.strip():
        return msgs, None
    result = index.search(query, int(cfg.get("k", 4)), interaction_id=interaction_id, rerank=cfg.get("rerank"),
                          filter=cfg.get("filter"))
    context = render_context(cfg.get("template", DEFAULT_TEMPLATE), result.hits, query)
    # After any system prompt of the version, before the conversation.
    at = next((i for i, m in enumerate(msgs) if m.get("role") != "system"), len(msgs))
    msgs.insert(at, {"role": "system", "content": context})
    return msgs, result
