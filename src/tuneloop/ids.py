"""Identifiers: UUIDv7, made on the client, doubling as idempotency keys.

UUIDv7 (RFC 9562) sorts by creation time, so primary-key inserts append to the
B-tree instead of scattering across it.

>>> a, b = new_id(), new_id()
>>> a < b
True
"""
from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_seq = 0
# Random bits come from a pool refilled 4 KB at a time: os.urandom releases the GIL around
# its syscall, and a GIL release per id hands the interpreter to any busy thread (the
# capture writer) for up to the 5 ms switch interval -- the p99 of log() and @trace.
_POOL_SIZE = 4096
_pool = b""
_pos = 0


def _forget_pool() -> None:
    global _pool, _pos
    _pool, _pos = b"", 0  # a forked child must not hand out its parent's next ids


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def new_id() -> str:
    """Return a new UUIDv7 string, monotonic within this process."""
    global _last_ms, _seq, _pool, _pos
    with _lock:
        if _pos + 10 > len(_pool):
            _pool, _pos = os.urandom(_POOL_SIZE), 0
        pos = _pos
        _pos = pos + 10
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            # Same (or earlier) millisecond: bump the 12-bit counter so ids stay ordered.
            ms = _last_ms
            _seq += 1
            if _seq > 0xFFF:
                ms += 1
                _seq = 0
        else:
            _seq = int.from_bytes(_pool[pos:pos + 2], "big") & 0x3FF
        _last_ms = ms
        seq = _seq
        rand = int.from_bytes(_pool[pos + 2:pos + 10], "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def now() -> float:
    """Seconds since the epoch (UTC). All timestamps in the store use this unit."""
    return time.time()
