"""A generated product-support corpus with paraphrased queries, for benchmarks, tests and demos.

Each made-up product ("Vorlix kettle") has one document per aspect (warranty, shipping,
returns, ...). Queries paraphrase the aspect without its keywords ("what if my Vorlix
kettle breaks after a year?" for the warranty document) and name the product, so a
retriever has to match a made-up name *and* a paraphrase, among documents that share
either one: all-MiniLM-L6-v2 gets many right and many wrong, which leaves room to learn.

Nothing here touches production paths; it is data, seeded and deterministic.

>>> c = make_corpus(20, seed=0)
>>> len(c.docs), len(c.queries) > 0
(200, True)
>>> train, held = c.split(0.75)
>>> {q.entity for q in train}.isdisjoint({q.entity for q in held})
True
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ASPECTS", "Query", "Corpus", "make_corpus", "simulate_searches"]

_SYL1 = ["vor", "quan", "zep", "mal", "tri", "bex", "kor", "lum", "nav", "pol", "sar", "tev", "ul", "wix", "yor",
         "dra", "fen", "gal", "hux", "jin", "kel", "mor", "nix", "ost", "ryn"]
_SYL2 = ["lix", "dro", "hyra", "tek", "vana", "bo", "zen", "qua", "mira", "dex", "lon", "rix", "tora", "vel", "sy",
         "ndo", "pex", "gra", "cor", "ani"]
_KINDS = ["kettle", "blender", "drone", "router", "lamp", "speaker", "camera", "heater", "scooter", "watch",
          "toaster", "vacuum", "fan", "printer", "monitor", "headset", "thermostat", "doorbell", "grill", "projector"]
_CITIES = ["Denver", "Leeds", "Lyon", "Osaka", "Porto", "Austin", "Gdansk", "Perth"]
_COLORS = ["black and white", "slate grey and red", "forest green", "sand and navy", "silver"]

# aspect -> (document templates, query templates); queries avoid the documents' keywords.
ASPECTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "warranty": (("The {name} comes with a {n}-year warranty that covers manufacturing defects.",),
                 ("what happens if my {name} breaks after a year", "is my {name} covered if it stops working",
                  "how long is the {name} guaranteed for", "will they fix a faulty {name} for free")),
    "shipping": (("Orders of the {name} ship from our {city} warehouse and arrive in {n} business days.",),
                 ("when will my {name} get here", "how long until the {name} is at my door",
                  "where is the {name} sent from", "how fast is {name} delivery")),
    "returns": (("You can return the {name} within {m} days of purchase for a full refund.",),
                ("can I send back the {name}", "I don't like my {name}, can I get my money back",
                 "how many days do I have to give back the {name}", "is the {name} refundable")),
    "battery": (("The {name} runs for {n} hours on a full charge and recharges over USB-C.",),
                ("how long does the {name} last unplugged", "how often must I plug in the {name}",
                 "does the {name} keep going all day without power", "what powers the {name} on the go")),
    "price": (("The {name} costs ${p} and is often discounted during seasonal sales.",),
              ("how much is the {name}", "what will the {name} set me back", "is the {name} expensive",
               "can I get the {name} cheaper")),
    "cleaning": (("To clean the {name}, wipe it with a damp cloth and never submerge it in water.",),
                 ("how do I wash the {name}", "can the {name} go in the sink", "keeping my {name} spotless",
                  "what gets dirt off the {name}")),
    "setup": (("Setting up the {name} takes about {n} minutes using the companion app.",),
              ("how do I get started with my new {name}", "first time installing the {name}",
               "what do I do when the {name} arrives", "getting the {name} ready to use")),
    "safety": (("Keep the {name} away from children and do not use it near open flames.",),
               ("is the {name} dangerous", "can my kids play with the {name}", "risks of using the {name}",
                "what precautions does the {name} need")),
    "compatibility": (("The {name} works with Android, iOS and most smart home hubs.",),
                      ("will the {name} talk to my iphone", "does the {name} connect to alexa",
                       "which phones can control the {name}", "can I use the {name} with google home")),
    "colors": (("The {name} is available in {colors} finishes.",),
               ("what shades does the {name} come in", "can I get the {name} in a dark tone",
                "does the {name} come in more than one look", "which {name} finish should I pick")),
}


@dataclass(frozen=True)
class Query:
    text: str
    doc_id: str
    entity: str
    aspect: str
    template: int = 0  # which paraphrase of the aspect (0-3)


@dataclass(frozen=True)
class Corpus:
    docs: tuple[dict[str, Any], ...]
    queries: tuple[Query, ...]
    entities: tuple[str, ...]

    def split(self, train_fraction: float = 0.7, seed: int = 0,
              holdout_templates: bool = False) -> tuple[list[Query], list[Query]]:
        """Queries of a ``train_fraction`` of the products, and of the other products (held out).

        With ``holdout_templates`` the held-out queries also use only paraphrases (2 and 3)
        that the training queries never use (0 and 1): new products *and* new phrasings.
        """
        ents = list(self.entities)
        random.Random(seed).shuffle(ents)
        train = set(ents[:int(round(len(ents) * train_fraction))])
        tr = [q for q in self.queries if q.entity in train and (not holdout_templates or q.template < 2)]
        held = [q for q in self.queries if q.entity not in train and (not holdout_templates or q.template >= 2)]
        return tr, held


def _names(n: int, rng: random.Random) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        name = f"{rng.choice(_SYL1)}{rng.choice(_SYL2)}".capitalize() + f" {rng.choice(_KINDS)}"
        if len(seen) >= len(_SYL1) * len(_SYL2) * len(_KINDS) * 0.8:
            name += f" {rng.randint(2, 99)}"
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def make_corpus(n_entities: int, *, seed: int = 0, aspects: Iterable[str] | None = None,
                queries_per_doc: int = 2) -> Corpus:
    """``n_entities`` products x the aspects: one document each, ``queries_per_doc`` paraphrased queries each."""
    rng = random.Random(seed)
    names = _names(n_entities, rng)
    chosen = list(aspects or ASPECTS)
    docs, queries = [], []
    for e, name in enumerate(names):
        for aspect in chosen:
            doc_t, query_t = ASPECTS[aspect]
            doc_id = f"p{e:05d}-{aspect}"
            text = rng.choice(doc_t).format(name=name, n=rng.randint(2, 9), m=rng.choice([14, 30, 60, 90]),
                                            p=rng.randint(19, 499), city=rng.choice(_CITIES),
                                            colors=rng.choice(_COLORS))
            docs.append({"id": doc_id, "text": text, "meta": {"product": name, "aspect": aspect}})
            for t in sorted(rng.sample(range(len(query_t)), min(queries_per_doc, len(query_t)))):
                queries.append(Query(query_t[t].format(name=name), doc_id, name, aspect, t))
    return Corpus(tuple(docs), tuple(queries), tuple(names))


def simulate_searches(index: Any, queries: Sequence[Query], *, k: int = 10, interaction_prefix: str | None = None,
                      seed: int = 0) -> dict[str, int]:
    """Search each query through ``index`` (a RetrievalIndex) and report like a user would.

    The relevant document, when shown, is clicked and used; the documents ranked above it
    were read and skipped. Returns counts ``{"searches", "hits"}``.
    """
    hits = 0
    for i, q in enumerate(queries):
        iid = f"{interaction_prefix}-{seed}-{i}" if interaction_prefix else None
        res = index.search(q.text, k, interaction_id=iid)
        if q.doc_id in res.ids:
            rank = res.ids.index(q.doc_id)
            index.feedback(res.retrieval_id, used=[q.doc_id], clicked=[q.doc_id], skipped=res.ids[:rank])
            hits += 1
        else:
            index.feedback(res.retrieval_id, skipped=res.ids[:3])
    return {"searches": len(queries), "hits": hits}
