"""Plain helpers for the retrieval tests (imported by name: conftest puts this folder on sys.path)."""
from __future__ import annotations

from tuneloop.models.embed import HashingEmbedder


class CountingEmbedder(HashingEmbedder):
    """The real hashing embedder, counting the texts it embeds (to prove what is not re-embedded)."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__(dim=dim)
        self.texts: list[str] = []

    def encode(self, texts):
        self.texts += list(texts)
        return super().encode(texts)


DOCS = [
    {"id": "pw", "text": "How to reset your account password from the login page", "meta": {"topic": "account"}},
    {"id": "ship", "text": "Standard shipping takes three to five business days", "meta": {"topic": "orders"}},
    {"id": "refund", "text": "Refunds are issued to the original card within ten days", "meta": {"topic": "orders"}},
    {"id": "2fa", "text": "Turn on two factor authentication in security settings", "meta": {"topic": "account"}},
    {"id": "cancel", "text": "Cancel an order before it ships from the orders page", "meta": {"topic": "orders"}},
]
