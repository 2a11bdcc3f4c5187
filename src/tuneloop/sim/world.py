"""The demo world: checkable tasks and simulated users with a hidden preference.

Users never say what they want; they only react. Their hidden preference is an answer
that is exactly right *and* in the requested shape (a number; a single word). They give
explicit feedback at a realistic rate, regenerate when unhappy, copy when happy, and keep
chatting when satisfied: the signals the loop learns from.

>>> task = AdditionTask(seed=1)
>>> q = task.sample(__import__("random").Random(0))
>>> task.check(q, q.expected)
True
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Question:
    prompt: str
    expected: str
    topic: str = "default"


class AdditionTask:
    """Addition, where users want the number alone (the tiny model's world).

    The pre-existing model (see ``sim.pretrain``) learned sums from text that mostly
    wraps the number in words ("The answer is 8."), so it is often right but rarely in the
    shape users want: the loop has a preference to discover.

    Part of that preference can be met by instruction: the pretraining text also held
    chats whose system prompt says :attr:`INSTRUCTION`, mostly answered with the number
    alone (and chats with other system prompts, answered as usual). A prompt challenger
    that finds the instruction mostly fixes the shape; fine-tuning fixes the rest, and
    the wrong sums.
    """

    name = "addition"
    checker = "exact"
    checker_args: dict = {}
    STYLES = ("{s}", "The answer is {s}.", "{s} is the sum.", "It is {s}.")
    STYLE_WEIGHTS = (0.2, 0.3, 0.25, 0.25)
    INSTRUCTION = "Answer with the number only."
    INSTRUCTION_OBEYED = 0.7  # share of instructed pretraining answers that are the bare number
    OTHER_SYSTEM_PROMPTS = ("You are a helpful assistant.", "Be friendly and explain the answer.")
    # What a demo operator would try first (the demo writes them to prompts.yaml for the prompt lever).
    PROMPT_CANDIDATES = ({"name": "friendly", "system": "Be friendly and explain the answer."},
                         {"name": "number-only", "system": INSTRUCTION})

    def __init__(self, seed: int = 0, low: int = 0, high: int = 9, golden_size: int = 20) -> None:
        self.low, self.high = low, high
        rng = random.Random(seed)
        pairs = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1)]
        rng.shuffle(pairs)
        # Golden prompts are held out of traffic so the leak guard and the gate stay honest.
        self.golden_pairs, self.traffic_pairs = pairs[:golden_size], pairs[golden_size:]

    @staticmethod
    def _q(a: int, b: int) -> Question:
        return Question(f"{a}+{b}=", str(a + b), topic=f"sum{(a + b) // 5}")

    def sample(self, rng: random.Random) -> Question:
        return self._q(*rng.choice(self.traffic_pairs))

    def golden(self) -> list[Question]:
        return [self._q(a, b) for a, b in self.golden_pairs]

    def training_examples(self, n: int, rng: random.Random) -> list[tuple[str | None, str, str]]:
        """Pretraining rows ``(system prompt or None, question, answer)`` for the tiny base model:
        all pairs; answers in mixed styles, or the number alone under :attr:`INSTRUCTION`."""
        pairs = self.golden_pairs + self.traffic_pairs  # the base knows arithmetic; golden tests the format
        rows = []
        for _ in range(n):
            q = self._q(*rng.choice(pairs))
            u = rng.random()
            system = self.INSTRUCTION if u < 0.3 else rng.choice(self.OTHER_SYSTEM_PROMPTS) if u < 0.45 else None
            obeyed = system == self.INSTRUCTION and rng.random() < self.INSTRUCTION_OBEYED
            style = "{s}" if obeyed else rng.choices(self.STYLES, weights=self.STYLE_WEIGHTS)[0]
            rows.append((system, q.prompt, style.format(s=q.expected)))
        return rows

    def check(self, q: Question, answer: str) -> bool:
        return answer.strip() == q.expected


CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "Egypt": "Cairo", "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
    "Sweden": "Stockholm", "Poland": "Warsaw", "Greece": "Athens", "Portugal": "Lisbon", "Ireland": "Dublin",
    "Austria": "Vienna", "Russia": "Moscow", "China": "Beijing", "India": "Delhi", "Cuba": "Havana",
    "Chile": "Santiago", "Finland": "Helsinki", "Denmark": "Copenhagen", "Hungary": "Budapest",
    "Belgium": "Brussels", "Thailand": "Bangkok", "Vietnam": "Hanoi", "Iran": "Tehran", "Iraq": "Baghdad",
    "Argentina": "Buenos Aires", "Mexico": "Mexico City", "Colombia": "Bogota", "Turkey": "Ankara",
    "Ukraine": "Kyiv", "Romania": "Bucharest", "Czechia": "Prague", "Netherlands": "Amsterdam",
    "Switzerland": "Bern", "Australia": "Canberra", "Morocco": "Rabat", "Nigeria": "Abuja",
    "Ghana": "Accra", "Ethiopia": "Addis Ababa", "Philippines": "Manila", "Indonesia": "Jakarta",
    "Malaysia": "Kuala Lumpur", "Pakistan": "Islamabad", "Bangladesh": "Dhaka", "Nepal": "Kathmandu",
    "Venezuela": "Caracas", "Ecuador": "Quito", "Bolivia": "Sucre", "Uruguay": "Montevideo",
    "Paraguay": "Asuncion", "Iceland": "Reykjavik", "Croatia": "Zagreb", "Serbia": "Belgrade",
    "Bulgaria": "Sofia", "Slovakia": "Bratislava", "Lithuania": "Vilnius", "Latvia": "Riga",
    "Estonia": "Tallinn", "Jordan": "Amman", "Lebanon": "Beirut", "Syria": "Damascus", "Qatar": "Doha",
    "Senegal": "Dakar", "Tunisia": "Tunis", "Algeria": "Algiers", "Zimbabwe": "Harare",
}


class CapitalsTask:
    """"What is the capital of X?" — users want the right city, said briefly (SmolLM2's world).

    SmolLM2-135M-Instruct knows some capitals and wraps them in a sentence; it also names
    wrong cities and rambles. A user is satisfied by the right city in at most
    ``max_words`` words. The golden set holds out 20 countries and checks that the answer
    contains the right city.
    """

    name = "capitals"
    checker = "contains"
    PROMPT_CANDIDATES = ({"name": "concise", "system": "Be concise."},
                         {"name": "city-only", "system": "Answer with only the city name."})

    def __init__(self, seed: int = 0, max_words: int = 8) -> None:
        items = sorted(CAPITALS.items())
        random.Random(seed).shuffle(items)
        self.golden_items, self.traffic_items = items[:20], items[20:]
        self.max_words = max_words
        # The golden set checks what users want: the right city, in at most max_words words.
        self.checker_args = {"max_words": max_words}

    @staticmethod
    def _q(country: str, city: str) -> Question:
        return Question(f"What is the capital of {country}? Answer briefly.", city, topic=country[0])

    def sample(self, rng: random.Random) -> Question:
        return self._q(*rng.choice(self.traffic_items))

    def golden(self) -> list[Question]:
        return [self._q(c, city) for c, city in self.golden_items]

    def check(self, q: Question, answer: str) -> bool:
        words = answer.split()
        return 0 < len(words) <= self.max_words and q.expected.lower() in answer.lower()


@dataclass
class UserReaction:
    """What a simulated user did after an answer."""

    satisfied: bool
    thumbs: int | None = None  # +1 / -1 when the user bothered to click
    regenerate: bool = False
    copied: bool = False
    dwell_s: float = 0.0


@dataclass
class SimUser:
    """A user with a hidden preference and habits drawn once."""

    user_id: str
    feedback_rate: float = 0.2  # explicit feedback on 10-30% of answers
    regenerate_rate: float = 0.6
    copy_rate: float = 0.4
    rng: random.Random = field(default_factory=random.Random)

    def react(self, satisfied: bool) -> UserReaction:
        r = UserReaction(satisfied=satisfied)
        if self.rng.random() < self.feedback_rate:
            r.thumbs = 1 if satisfied else -1
        if satisfied:
            r.copied = self.rng.random() < self.copy_rate
            r.dwell_s = self.rng.uniform(20, 120)
        else:
            r.regenerate = self.rng.random() < self.regenerate_rate
            r.dwell_s = self.rng.uniform(1, 10)
        return r


def make_users(n: int, seed: int = 0) -> list[SimUser]:
    rng = random.Random(seed)
    return [SimUser(f"user-{i:04d}", feedback_rate=rng.uniform(0.1, 0.3), rng=random.Random(rng.random())) for i in range(n)]
