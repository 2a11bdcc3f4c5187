"""PII scrubbing: emails, phone numbers, card numbers, IBANs, IP addresses, API keys and secrets.

>>> r = scrub("mail bob@example.com, card 4111 1111 1111 1111, call +1 415-555-0100")
>>> r.text
'mail [EMAIL], card [CARD], call [PHONE]'
>>> r.counts
{'email': 1, 'card': 1, 'phone': 1}

Checked, not just matched: a card number must pass the Luhn check, an IBAN the ISO 13616
mod-97 check, an IPv6 address must parse; a 16-digit order number that fails Luhn stays.

Fast on large datasets: every pattern is compiled once, and each family runs only when a
cheap gate says it can match (a digit for numbers, ``@`` for emails, ``:`` for IPv6, a
key-like run for secrets), so the common row without PII costs a few scans in C.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PII_KINDS = ("secret", "email", "iban", "card", "ip", "phone")

DEFAULT_REPLACEMENTS: Mapping[str, str] = {
    "secret": "[SECRET]", "email": "[EMAIL]", "iban": "[IBAN]", "card": "[CARD]", "ip": "[IP]", "phone": "[PHONE]",
}

_SECRET = re.compile(
    r"""(?P<bearer>(?i:bearer)\s+)[A-Za-z0-9._~+/=-]{16,}"""          # Authorization: Bearer <token>
    r"""|(?P<assign>(?i:api[_-]?key|secret|token|passw(?:or)?d|pwd)["']?\s*[:=]\s*["']?)"""
    r"""(?!\[(?:SECRET|EMAIL|IBAN|CARD|IP|PHONE)(?::[0-9a-f]+)?\](?![^\s"',;]))[^\s"',;]{8,}"""  # not our own token again
    r"""|\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}"""                     # OpenAI / Anthropic style keys
    r"""|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"""                              # AWS access key ids
    r"""|\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{22,}"""
    r"""|\bxox[abprs]-[A-Za-z0-9-]{10,}|\bAIza[0-9A-Za-z_-]{35}"""
    r"""|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"""  # JWT
    r"""|\b[0-9a-fA-F]{32,}\b"""                                       # long hex secrets
    r"""|(?<![A-Za-z0-9+/_-])(?=[A-Za-z0-9+/_-]*\d)(?=[A-Za-z0-9+/_-]*[A-Za-z])[A-Za-z0-9+/_-]{40,}={0,2}"""
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
_IBAN_GATE = re.compile(r"[A-Z]{2}\d\d")
# A run of digits and separators long enough to hold an IP, a phone or a card: only these
# short spans go through the full _NUMBERS alternation.
_NUMBER_SPAN = re.compile(r"[+(\d][\d .()/-]{5,}\d")
_NUMBERS = re.compile(
    r"(?P<card>(?<![\d.])\d(?:[ -]?\d){12,18}(?!\.?\d))"
    r"|(?P<ip>(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\.?\d))"
    r"|(?P<phone>(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{1,4}){1,5}(?![\w-])"
    r"|(?<![\w+])\+\d{7,15}\b)"
)
_DIGITS = "0123456789"


def luhn_valid(digits: str) -> bool:
    """True if ``digits`` (13-19 of them) pass the Luhn check.

    >>> luhn_valid("4111111111111111"), luhn_valid("4111111111111112")
    (True, False)
    """
    if not 13 <= len(digits) <= 19 or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """True if ``iban`` (spaces allowed) passes the ISO 13616 mod-97 check.

    >>> iban_valid("DE89 3704 0044 0532 0130 00"), iban_valid("DE00 3704 0044 0532 0130 00")
    (True, False)
    """
    s = iban.replace(" ", "").upper()
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    moved = s[4:] + s[:4]
    try:
        return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1
    except ValueError:
        return False


def _luhn_spaced(s: str) -> bool:
    return luhn_valid(s.replace(" ", "").replace("-", ""))


def _phone_ok(match: str) -> bool:
    digits = sum(c.isdigit() for c in match)
    if not 7 <= digits <= 15:
        return False
    # A bare "2024-05-01" or "12.5.2024" is a date, not a phone: require a + or parentheses,
    # or a groups shape that dates do not have (at least 9 digits).
    return match.startswith("+") or "(" in match or digits >= 9


@dataclass(frozen=True, slots=True)
class ScrubResult:
    """Scrubbed ``text`` and how many items of each kind were replaced."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Scrubber:
    """A configured scrubber: which ``kinds`` to remove and their replacement tokens.

    >>> Scrubber(kinds=["email"]).scrub("a@b.co 4111111111111111").text
    '[EMAIL] 4111111111111111'
    """

    def __init__(self, kinds: Iterable[str] | None = None, replacements: Mapping[str, str] | None = None) -> None:
        chosen = tuple(kinds) if kinds is not None else PII_KINDS
        unknown = sorted(set(chosen) - set(PII_KINDS))
        if unknown:
            from tuneloop.errors import ValidationError

            raise ValidationError(f"unknown PII kinds {unknown}; known: {list(PII_KINDS)}", field="kinds")
        self.kinds = frozenset(chosen)
        self._numbers = bool(self.kinds & {"card", "ip", "phone"})
        self.replacements = {**DEFAULT_REPLACEMENTS, **(replacements or {})}

    def scrub(self, text: str) -> ScrubResult:
        """Replace every PII item in ``text``; return the new text and counts per kind."""
        if not text:
            return ScrubResult(text or "", {})
        counts: dict[str, int] = {}
        # Python's regex engine costs tens of ns per character; str.count / `in` are C scans
        # at a few ns. Cheap gates first, so a clean row never meets a regex.
        digits = sum(map(text.count, _DIGITS))
        if "secret" in self.kinds and self._may_hold_secret(text, digits):
            text = _SECRET.sub(lambda m: self._secret(m, counts), text)
        if "email" in self.kinds and "@" in text:
            text = _EMAIL.sub(lambda m: self._replace("email", m.group(0), counts), text)
        if "ip" in self.kinds and text.count(":") >= 2:
            text = _IPV6.sub(lambda m: self._ipv6(m, counts), text)
        if "iban" in self.kinds and digits >= 10 and _IBAN_GATE.search(text):
            text = self._ibans(text, counts)
        if self._numbers and digits >= 4:   # an IPv4 has at least 4 digits, a phone 7, a card 13
            text = _NUMBER_SPAN.sub(lambda m: _NUMBERS.sub(lambda n: self._number(n, counts), m.group(0)), text)
        return ScrubResult(text, counts)

    @staticmethod
    def _may_hold_secret(text: str, digits: int) -> bool:
        low = text.lower()
        if ("bearer" in low or "sk-" in low or "xox" in low or "aiza" in low or "eyj" in low
                or "AKIA" in text or "ASIA" in text or ("_" in low and ("gh" in low or "github" in low))):
            return True
        if ("=" in text or ":" in text) and ("key" in low or "token" in low or "secret" in low or "passw" in low
                                             or "pwd" in low):
            return True
        # Generic hex / base64 secrets need digits (a 32-hex run without one: odds (6/16)^32)
        # and a 32-character token.
        return digits >= 2 and len(text) >= 32 and max(map(len, text.split()), default=0) >= 32

    def _count(self, kind: str, counts: dict[str, int]) -> str:
        counts[kind] = counts.get(kind, 0) + 1
        return self.replacements[kind]

    def _replace(self, kind: str, value: str, counts: dict[str, int]) -> str:
        """The token for one found ``value`` (a subclass may derive it from the value)."""
        return self._count(kind, counts)

    def _secret(self, m: re.Match, counts: dict[str, int]) -> str:
        keep = m.group("bearer") or m.group("assign") or ""  # keep "Bearer " / "api_key=" for readability
        if m.group("assign") and m.group(0)[len(keep):] in self.replacements.values():
            return m.group(0)  # a custom replacement token of ours, scrubbed already
        return keep + self._replace("secret", m.group(0)[len(keep):], counts)

    def _ibans(self, text: str, counts: dict[str, int]) -> str:
        # _IBAN is greedy: "DE89 3704 0044 0532 0130 00 EUR" runs into the next word and the
        # whole fails mod-97. Take the longest prefix ending at a space that passes instead,
        # and look again right after it (another IBAN may follow).
        out, pos = [], 0
        while (m := _IBAN.search(text, pos)) is not None:
            s = m.group(0)
            size = _longest_valid_prefix(s, " ", iban_valid)
            if size:
                out.append(text[pos:m.start()] + self._replace("iban", s[:size], counts))
                pos = m.start() + size
            else:  # no IBAN starts here: skip the first word of the match, not all of it
                cut = s.find(" ")
                stop = m.start() + cut + 1 if cut > 0 else m.end()
                out.append(text[pos:stop])
                pos = stop
        out.append(text[pos:])
        return "".join(out)

    def _ipv6(self, m: re.Match, counts: dict[str, int]) -> str:
        s = m.group(0)
        try:
            ipaddress.IPv6Address(s)
        except ValueError:
            return s
        return self._replace("ip", s, counts)

    def _number(self, m: re.Match, counts: dict[str, int]) -> str:
        kind = m.lastgroup
        s = m.group(0)
        if kind not in self.kinds:
            return s
        if kind == "card":
            digits = s.replace(" ", "").replace("-", "")
            if luhn_valid(digits):
                return self._replace("card", s, counts)
            # Not a card: it may still be a phone number written with separators.
            if "phone" in self.kinds and _phone_ok(s) and len(digits) <= 15:
                return self._replace("phone", s, counts)
            # Or a card followed by more digits ("4111 1111 1111 1111 12/26"): the pattern took
            # up to 19 digits greedily; a prefix of 13+ digits ending at a separator may pass.
            size = _longest_valid_prefix(s, " -", _luhn_spaced, whole=False)
            return self._replace("card", s[:size], counts) + s[size:] if size else s
        if kind == "phone":
            return self._replace("phone", s, counts) if _phone_ok(s) else s
        return self._replace(kind, s, counts)


def _longest_valid_prefix(s: str, separators: str, valid, *, whole: bool = True) -> int:
    """Length of the longest ``s`` (if ``whole``) or ``s[:i]`` followed by a separator that is ``valid``; 0 if none.

    >>> _longest_valid_prefix("4111 1111 1111 1111 12", " -", _luhn_spaced, whole=False)
    19
    """
    for i in range(len(s) if whole else len(s) - 1, 0, -1):
        if (i == len(s) or s[i] in separators) and s[i - 1] not in separators and valid(s[:i]):
            return i
    return 0


_DEFAULT = Scrubber()


def scrub(text: str) -> ScrubResult:
    """Scrub every PII kind from ``text`` with the default replacement tokens."""
    return _DEFAULT.scrub(text)


def merge_counts(total: dict[str, int], counts: Mapping[str, int]) -> dict[str, int]:
    """Add ``counts`` into ``total`` in place (and return it)."""
    for k, v in counts.items():
        total[k] = total.get(k, 0) + v
    return total
