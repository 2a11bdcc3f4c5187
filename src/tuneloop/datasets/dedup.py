"""Exact and near-duplicate removal, and the golden-set leak guard.

Exact: a 64-bit digest of the normalized text (casefolded, punctuation dropped, whitespace
collapsed), so "Hello, World!" and "hello world" are one example.

Near: MinHash signatures + LSH banding, vectorized in numpy over a whole batch of texts
instead of one Python object per row (datasketch's ``MinHash``), which is what makes a
million rows fit in seconds. The hashing is deterministic (no per-process salt), so the same
data always gives the same dataset.

>>> texts = ["the quick brown fox jumps over the lazy dog today",
...          "the quick brown fox jumps over the lazy dog today!",
...          "an entirely different sentence about training data"]
>>> near_duplicate_mask(texts, threshold=0.8).tolist()
[False, True, False]

Pipeline, per batch: words (``str.translate`` + ``split``) -> 64-bit word hashes (numpy
over the batch's UTF-8 bytes) -> word n-gram shingles -> ``num_perm`` multiply-shift hashes,
min per row -> bands of ``r`` rows hashed to one 64-bit key each. Candidates share a band
key; a candidate pair is kept only if its estimated Jaccard (from 16-bit signature
fingerprints) reaches the threshold, and connected components keep their first row.
"""
from __future__ import annotations

import hashlib
import string
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from tuneloop.errors import ValidationError

# Punctuation becomes a space, apostrophes vanish ("what's" -> "whats", one word).
_PUNCT = str.maketrans({**{c: " " for c in string.punctuation + "\u201c\u201d\u00a0\u2014\u2013"},
                        "'": None, "\u2018": None, "\u2019": None})
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASKS = np.array([(1 << (8 * k)) - 1 if k < 8 else (1 << 64) - 1 for k in range(9)], dtype=np.uint64)


# The same normalization for ASCII text as one bytes.translate (a C table lookup per byte):
# A-Z -> a-z, punctuation -> space, apostrophes deleted.
_ASCII = bytes(range(256)).translate(bytes.maketrans(string.ascii_uppercase.encode(), string.ascii_lowercase.encode()))
_ASCII = _ASCII.translate(bytes.maketrans(string.punctuation.encode(), b" " * len(string.punctuation)))


def normalize_text(text: str) -> str:
    """Casefold, drop punctuation, collapse whitespace: the key of exact dedup.

    >>> normalize_text("  Hello,   WORLD!! It's")
    'hello world its'
    """
    if text.isascii():
        return b" ".join(text.encode().translate(_ASCII, b"'").split()).decode()
    text = unicodedata.normalize("NFKC", text)
    return " ".join(text.casefold().translate(_PUNCT).split())


def digest(text: str) -> int:
    """A deterministic 64-bit digest of ``text`` (no per-process salt, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def exact_key(*parts: str) -> int:
    """A 64-bit digest of the normalized ``parts`` (order matters).

    >>> exact_key("Hi!", "there") == exact_key("hi", "There.")
    True
    """
    return digest("\x1f".join(normalize_text(p) for p in parts))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, in place on a uint64 array (wrapping arithmetic)."""
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def _normalize_for_words(text: str) -> str:
    if text.isascii():
        return text.encode().translate(_ASCII, b"'").decode()
    text = unicodedata.normalize("NFKC", text)
    return text.casefold().translate(_PUNCT)


def _word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word of every (normalized) text, and each text's word count.

    The texts are joined into one UTF-8 buffer (NUL between texts); words are runs of bytes
    above 0x20; each hash mixes a word's first 8 bytes, last 8 bytes and length, read with
    one fancy-index gather per batch. No Python loop over words.
    """
    n = len(texts)
    buf = "\0".join(texts).encode("utf-8")
    raw = np.frombuffer(buf + b"\0" * 16, dtype=np.uint8)
    body = raw[: len(buf)]
    word = body > 32
    edge = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edge == 1)
    ends = np.flatnonzero(edge == -1)
    seps = np.flatnonzero(body == 0)
    row_of_word = np.searchsorted(seps, starts)
    counts = np.bincount(row_of_word, minlength=n).astype(np.int64)
    if len(starts) == 0:
        return np.zeros(0, dtype=np.uint64), counts
    lengths = ends - starts
    windows = np.lib.stride_tricks.sliding_window_view(raw, 8)
    first = windows[starts].copy().view("<u8").ravel() & _MASKS[np.minimum(lengths, 8)]
    last = windows[np.maximum(ends - 8, starts)].copy().view("<u8").ravel()
    last[lengths <= 8] = 0
    h = _mix(first ^ _mix(last ^ (lengths.astype(np.uint64) * _M2)))
    return h, counts


def _shingles(word_hashes: np.ndarray, counts: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Word n-gram shingle hashes (rows with fewer words get one shingle of all of them)."""
    n = len(counts)
    row_of_word = np.repeat(np.arange(n), counts)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    k = ngram
    if k > 1 and len(word_hashes) >= k:
        sh = word_hashes[: len(word_hashes) - k + 1].copy()
        for j in range(1, k):
            nxt = word_hashes[j: len(word_hashes) - k + 1 + j]
            sh = _mix(sh ^ ((nxt << np.uint64(7 * j)) | (nxt >> np.uint64(64 - 7 * j))))
        ok = row_of_word[: len(sh)] == row_of_word[k - 1: k - 1 + len(sh)]
        sh, rows = sh[ok], row_of_word[: len(ok)][ok]
    elif k == 1:
        sh, rows = word_hashes.copy(), row_of_word
    else:
        sh, rows = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    short = np.flatnonzero(counts < k) if k > 1 else np.flatnonzero(counts == 0)
    if len(short):
        # Texts shorter than one shingle: hash all their words together (empty -> constant).
        extra = np.empty(len(short), dtype=np.uint64)
        for i, r in enumerate(short):
            acc = np.uint64(0x9E3779B97F4A7C15)
            for w in word_hashes[offsets[r]:offsets[r + 1]]:
                acc = _mix(np.array([acc ^ w], dtype=np.uint64))[0]
            extra[i] = acc
        sh = np.concatenate([sh, extra])
        rows = np.concatenate([rows, short])
        order = np.argsort(rows, kind="stable")
        sh, rows = sh[order], rows[order]
    return sh, rows


@lru_cache(maxsize=16)
def _perm_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimizing the weighted false positive + negative areas (as datasketch).

    >>> lsh_params(0.8, 128)
    (9, 13)
    """
    xs = np.linspace(0.0, 1.0, 2001)
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            p = 1.0 - (1.0 - xs ** r) ** b
            lo, hi = xs <= threshold, xs >= threshold
            fp = np.trapezoid(p[lo], xs[lo])
            fn = np.trapezoid(1.0 - p[hi], xs[hi])
            err = fp * fp_weight + fn * fn_weight
            if err < best_err:
                best, best_err = (b, r), err
    return best


@dataclass(frozen=True)
class MinHasher:
    """Vectorized MinHash over word n-gram shingles.

    >>> sig = MinHasher(num_perm=64).signatures(["a b c d", "a b c e"])
    >>> sig.shape, sig.dtype.name
    ((2, 64), 'uint32')
    """

    num_perm: int = 128
    ngram: int = 3
    seed: int = 1
    perm_block: int = field(default=16, repr=False)

    def __post_init__(self) -> None:
        if self.num_perm < 8 or self.ngram < 1:
            raise ValidationError("MinHasher needs num_perm >= 8 and ngram >= 1", field="num_perm")

    @staticmethod
    def words(text: str) -> list[str]:
        """The words MinHash sees: casefolded, punctuation dropped."""
        return _normalize_for_words(text).split()

    def signatures(self, texts: Sequence[str], batch: int = 2048, *, normalized: bool = False) -> np.ndarray:
        """(len(texts), num_perm) uint32 signatures. ``normalized``: the texts already went
        through :func:`normalize_text` (saves doing it twice)."""
        if not normalized:
            texts = [_normalize_for_words(t) for t in texts]
        if len(texts) > batch:  # small batches keep the (perms, shingles) block in cache
            return np.concatenate([self._signatures(texts[i:i + batch]) for i in range(0, len(texts), batch)])
        return self._signatures(texts)

    def _signatures(self, texts: Sequence[str]) -> np.ndarray:
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.num_perm), dtype=np.uint32)
        wh, counts = _word_hashes([t.replace("\0", " ") if "\0" in t else t for t in texts])
        sh, rows = _shingles(wh, counts, self.ngram)
        x = (sh >> np.uint64(32)) ^ (sh & np.uint64(0xFFFFFFFF))  # fold to 32 bits for multiply-shift
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, dtype=np.int64)
        a, b = _perm_params(self.num_perm, self.seed)
        out = np.empty((self.num_perm, n), dtype=np.uint32)
        # (perms, shingles) layout: reduceat along the contiguous axis is ~20x faster.
        tmp = np.empty((self.perm_block, len(x)), dtype=np.uint64)
        for p0 in range(0, self.num_perm, self.perm_block):
            p1 = min(p0 + self.perm_block, self.num_perm)
            t = tmp[: p1 - p0]
            np.multiply(a[p0:p1, None], x[None, :], out=t)  # multiply-shift: (a*x + b) >> 32
            t += b[p0:p1, None]
            # The high half of the 64-bit minimum is the minimum of the high halves: shift
            # the n minima, not the S products.
            out[p0:p1, rows[starts]] = np.minimum.reduceat(t, starts, axis=1) >> np.uint64(32)
        return np.ascontiguousarray(out.T)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 keys: each band's ``rows`` signature values hashed to one number."""
    n = signatures.shape[0]
    keys = np.empty((n, bands), dtype=np.uint64)
    sig = signatures.astype(np.uint64)
    for i in range(bands):
        acc = np.full(n, ((i + 1) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
        for j in range(i * rows, (i + 1) * rows):
            acc = _mix(acc ^ sig[:, j])
        keys[:, i] = acc
    return keys


def estimate_jaccard(fp_a: np.ndarray, fp_b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard from 16-bit fingerprints (row-wise), corrected for chance matches."""
    eq = (fp_a == fp_b).mean(axis=-1)
    return np.clip((eq - 1 / 65536) / (1 - 1 / 65536), 0.0, 1.0)


class NearDuplicateIndex:
    """Accumulates signatures batch by batch; then says which rows are near-duplicates.

    Bands are tuned for recall (a missed near-duplicate weighs 9x a false candidate; at a
    threshold of 0.8 that is 14 bands of 9 rows instead of datasketch's 9 of 13), because
    every candidate pair is then verified on its estimated Jaccard: false candidates cost a
    vectorized comparison, missed duplicates would cost training data quality.

    Memory per row: ``bands`` 8-byte keys + ``num_perm`` 2-byte fingerprints (~370 bytes at
    the defaults), so a million rows need about 370 MB and no texts.

    >>> idx = NearDuplicateIndex(threshold=0.8)
    >>> idx.add_texts(["one two three four five six", "one two three four five six"])
    >>> idx.duplicates().tolist()
    [False, True]
    """

    def __init__(self, threshold: float = 0.8, *, num_perm: int = 128, ngram: int = 3, seed: int = 1,
                 fp_weight: float = 0.1, fn_weight: float = 0.9) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValidationError("near-duplicate threshold must be in (0, 1]", field="threshold", value=threshold)
        self.threshold = threshold
        self.hasher = MinHasher(num_perm=num_perm, ngram=ngram, seed=seed)
        self.bands, self.rows = lsh_params(threshold, num_perm, fp_weight, fn_weight)
        self._keys: list[np.ndarray] = []
        self._fps: list[np.ndarray] = []
        self.size = 0

    def add_texts(self, texts: Sequence[str], *, normalized: bool = False) -> None:
        self.add_signatures(self.hasher.signatures(texts, normalized=normalized))

    def add_signatures(self, sig: np.ndarray) -> None:
        self._keys.append(band_keys(sig, self.bands, self.rows))
        self._fps.append((sig & 0xFFFF).astype(np.uint16))
        self.size += len(sig)

    def _pairs(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate pairs over all bands: each row of a bucket with the bucket's first row and
        with its predecessor in the bucket (so a chain a~b~c, where c is too far from a, still
        links c through b), instead of all O(bucket^2) pairs."""
        firsts, others = [], []
        for band in range(keys.shape[1]):
            col = keys[:, band]
            order = np.argsort(col, kind="stable")
            sorted_col = col[order]
            new_group = np.r_[True, sorted_col[1:] != sorted_col[:-1]]
            group_first = order[np.flatnonzero(new_group)][np.cumsum(new_group) - 1]
            dup = np.flatnonzero(~new_group)
            firsts += [group_first[dup], order[dup - 1]]
            others += [order[dup], order[dup]]
        return np.concatenate(firsts), np.concatenate(others)

    def duplicates(self) -> np.ndarray:
        """Boolean mask over all added rows: True where the row near-duplicates an earlier one."""
        if self.size == 0:
            return np.zeros(0, dtype=bool)
        keys = np.concatenate(self._keys)
        fps = np.concatenate(self._fps)
        a, b = self._pairs(keys)
        if len(a) == 0:
            return np.zeros(self.size, dtype=bool)
        pairs = np.unique(np.stack([a, b], axis=1), axis=0)
        ok = estimate_jaccard(fps[pairs[:, 0]], fps[pairs[:, 1]]) >= self.threshold
        pairs = pairs[ok]
        return _non_first_of_components(self.size, pairs)


def _non_first_of_components(n: int, pairs: np.ndarray) -> np.ndarray:
    """True for every node that is not the smallest index of its connected component."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    mask = np.zeros(n, dtype=bool)
    if len(pairs) == 0:
        return mask
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    mask[first[labels] != np.arange(n)] = True
    return mask


def near_duplicate_mask(texts: Sequence[str], threshold: float = 0.8, **kw) -> np.ndarray:
    """Mask of rows that near-duplicate an earlier row (Jaccard of word shingles >= threshold)."""
    idx = NearDuplicateIndex(threshold, **kw)
    for start in range(0, len(texts), 8192):
        idx.add_texts(texts[start:start + 8192])
    return idx.duplicates()


class GoldenGuard:
    """Flags training prompts that match a golden prompt exactly or near-duplicately.

    Exact: same normalized text. Near: word-set (unigram) Jaccard >= ``threshold``, found by
    LSH tuned for recall (false negatives weigh 9x false positives) and then verified, so
    a leak must survive both to get through. The guard errs on the side of dropping.

    >>> g = GoldenGuard(["What is the capital of France?"], threshold=0.7)
    >>> g.leaks(["what is the capital of france", "So what is the capital of France?", "Add 2 and 3"]).tolist()
    [True, True, False]
    """

    def __init__(self, golden_prompts: Iterable[str], threshold: float = 0.8, *, num_perm: int = 128,
                 ngram: int = 1, seed: int = 7) -> None:
        prompts = [normalize_text(p) for p in golden_prompts if p and p.strip()]
        self.threshold = threshold
        self.exact = set(prompts)   # normalized texts: a set lookup is the exact match
        self.hasher = MinHasher(num_perm=num_perm, ngram=ngram, seed=seed)
        self.bands, self.rows = lsh_params(threshold, num_perm, fp_weight=0.1, fn_weight=0.9)
        self.size = len(prompts)
        if prompts:
            sig = self.hasher.signatures(prompts, normalized=True)
            keys = band_keys(sig, self.bands, self.rows)
            self._order = np.argsort(keys, axis=0, kind="stable")          # per band: golden rows by key
            self._sorted = np.take_along_axis(keys, self._order, axis=0)
            self._fps = (sig & 0xFFFF).astype(np.uint16)

    def __bool__(self) -> bool:
        return self.size > 0

    def leaks(self, prompts: Sequence[str], *, normalized: bool = False) -> np.ndarray:
        """Boolean mask: True where a prompt leaks a golden prompt."""
        out = np.zeros(len(prompts), dtype=bool)
        if not self.size or not len(prompts):
            return out
        norm = list(prompts) if normalized else [normalize_text(p) for p in prompts]
        exact = self.exact
        out |= np.fromiter((p in exact for p in norm), dtype=bool, count=len(norm))
        sig = self.hasher.signatures(norm, normalized=True)
        keys = band_keys(sig, self.bands, self.rows)
        fps = (sig & 0xFFFF).astype(np.uint16)
        rows, golden = [], []
        for band in range(self.bands):
            col = self._sorted[:, band]
            pos = np.searchsorted(col, keys[:, band])
            pos_c = np.minimum(pos, len(col) - 1)
            hit = np.flatnonzero(col[pos_c] == keys[:, band])
            # Every golden prompt sharing this band key is a candidate (a run in the sorted column).
            right = np.searchsorted(col, keys[hit, band], side="right")
            for k in range(int((right - pos[hit]).max(initial=0))):
                more = pos[hit] + k < right
                rows.append(hit[more])
                golden.append(self._order[pos[hit][more] + k, band])
        if rows:
            r, g = np.concatenate(rows), np.concatenate(golden)
            near = estimate_jaccard(fps[r], self._fps[g]) >= self.threshold
            out[r[near]] = True
        return out
