"""Simulated users talking to the gateway with the official ``openai`` client.

Each worker thread owns one client (a shared httpx pool degrades under contention, see
FIELD_NOTES). A request is one question; an unhappy user may regenerate (the same question
again in the same session), a happy one may copy; some give explicit thumbs.
"""
from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from tuneloop.sim.world import Question, SimUser


@dataclass(frozen=True)
class Outcome:
    """One answer as the user saw it (the ground truth the report is built from)."""

    user_id: str
    interaction_id: str
    version_id: str
    arm: str | None
    satisfied: bool
    regenerated: bool
    answer: str


class TrafficClient:
    """Sends questions and feedback to a tuneloop server at ``base_url``."""

    def __init__(self, base_url: str, api_key: str = "demo", *, temperature: float = 0.8, max_tokens: int = 16) -> None:
        self.base_url, self.api_key = base_url.rstrip("/"), api_key
        self.temperature, self.max_tokens = temperature, max_tokens
        self._local = threading.local()

    def _clients(self):
        c = getattr(self._local, "clients", None)
        if c is None:
            from openai import OpenAI

            http = httpx.Client(timeout=120)
            c = self._local.clients = (OpenAI(base_url=f"{self.base_url}/v1", api_key=self.api_key, http_client=http, max_retries=2), http)
        return c

    def ask(self, user: SimUser, session: str, q: Question) -> tuple[str, str, str, str | None]:
        openai_client, _ = self._clients()
        raw = openai_client.chat.completions.with_raw_response.create(
            model="tuneloop", messages=[{"role": "user", "content": q.prompt}], user=user.user_id,
            temperature=self.temperature, max_tokens=self.max_tokens,
            extra_headers={"X-Tuneloop-Session": session})
        completion = raw.parse()
        version = raw.headers.get("x-tuneloop-version", "")
        arm = raw.headers.get("x-tuneloop-arm") or None
        return completion.id, completion.choices[0].message.content or "", version, arm

    def feedback(self, rows: list[dict]) -> None:
        if not rows:
            return
        _, http = self._clients()
        r = http.post(f"{self.base_url}/v1/feedback", json={"feedback": rows},
                      headers={"Authorization": f"Bearer {self.api_key}"})
        r.raise_for_status()


def run_round(client: TrafficClient, users: list[SimUser], n_requests: int, sample: Callable[[random.Random], Question],
              check: Callable[[Question, str], bool], *, rng: random.Random, workers: int = 4,
              max_regenerations: int = 2) -> list[Outcome]:
    """``n_requests`` questions from randomly chosen users, answered concurrently."""
    jobs = [(rng.choice(users), sample(rng), f"s-{rng.getrandbits(48):012x}") for _ in range(n_requests)]

    def one(job) -> list[Outcome]:
        user, q, session = job
        outcomes, feedback = [], []
        for attempt in range(max_regenerations + 1):
            iid, answer, version, arm = client.ask(user, session, q)
            ok = check(q, answer)
            reaction = user.react(ok)
            if reaction.thumbs is not None:
                feedback.append({"interaction_id": iid, "kind": "thumbs", "value": reaction.thumbs, "user_id": user.user_id})
            if reaction.copied:
                feedback.append({"interaction_id": iid, "kind": "copy", "source": "implicit", "user_id": user.user_id})
            feedback.append({"interaction_id": iid, "kind": "dwell", "value": round(reaction.dwell_s, 1), "source": "implicit"})
            again = reaction.regenerate and attempt < max_regenerations
            outcomes.append(Outcome(user.user_id, iid, version, arm, ok, again, answer))
            if not again:
                break
        client.feedback(feedback)
        return outcomes

    with ThreadPoolExecutor(workers) as pool:
        return [o for batch in pool.map(one, jobs) for o in batch]
