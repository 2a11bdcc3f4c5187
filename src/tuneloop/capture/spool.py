"""A local spool: rows that could not be delivered yet, kept on disk until they can be.

The file is JSON Lines, one row per line (``{"t": "i"|"f", "r": {...}}``: an interaction
or a feedback row), appended under an advisory lock and fsync'd before ``append`` returns,
so a crash right after loses nothing. Replay *claims* the file by renaming it (atomic), so
new appends start a fresh file while the claimed one is sent; what cannot be sent is
appended back. Several processes may share one spool: a row may then be sent twice, which
the receivers make harmless by ignoring ids they already hold (exactly-once storage).

>>> import tempfile, pathlib
>>> sp = Spool(pathlib.Path(tempfile.mkdtemp()) / "s.jsonl")
>>> sp.append([("i", {"id": "a"}), ("f", {"id": "b"})])
>>> [f.name.endswith(".replay") for f in sp.claim()]
[True]
>>> sp.pending()
True
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tuneloop.capture.records import encode_json
from tuneloop.ids import new_id

try:  # POSIX advisory locks; elsewhere only one process should use a spool file
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("tuneloop.capture")
Item = tuple[str, dict[str, Any]]


class Spool:
    """Rows waiting for delivery, in ``path`` (and claimed ``path.<id>.replay`` files)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(os.path.expanduser(str(path)))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, items: Sequence[Item]) -> None:
        """Append rows and fsync; raises OSError if the disk refuses (the caller counts it)."""
        if not items:
            return
        data = "".join(encode_json({"t": t, "r": r}) + "\n" for t, r in items)
        with self._locked(), open(self.path, "a", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def append_lines(self, lines: Iterator[str]) -> None:
        """Append raw spool lines back (what a failed replay did not deliver)."""
        with self._locked(), open(self.path, "a", encoding="utf-8") as fh:
            for line in lines:
                fh.write(line if line.endswith("\n") else line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _replay_files(self) -> list[Path]:
        if not self.path.parent.exists():
            return []
        return sorted(self.path.parent.glob(self.path.name + ".*.replay"))

    def pending(self) -> bool:
        """Whether anything waits in the spool (cheap: stats only)."""
        try:
            if self.path.stat().st_size > 0:
                return True
        except FileNotFoundError:
            pass
        return bool(self._replay_files())

    def claim(self) -> list[Path]:
        """Move the spool aside for replay and return every file waiting to be replayed.

        Files left by a replay that crashed (or by another process) are returned too.
        """
        if self.path.exists():
            with self._locked():
                with contextlib.suppress(FileNotFoundError):
                    if self.path.stat().st_size > 0:
                        self.path.rename(self.path.with_name(f"{self.path.name}.{new_id()}.replay"))
        return self._replay_files()

    def count(self) -> int:
        """Rows waiting in the spool (reads the files: for tests and reports, not hot paths)."""
        total = 0
        for f in [self.path, *self._replay_files()]:
            with contextlib.suppress(FileNotFoundError), open(f, "rb") as fh:
                total += sum(1 for line in fh if line.strip())
        return total


def read_batches(path: Path, size: int) -> Iterator[tuple[list[Item], list[str]]]:
    """Batches of ``size`` rows of a claimed spool file, each with its raw lines.

    A torn last line (a crash mid-append before fsync) is skipped with a warning.
    """
    items: list[Item] = []
    lines: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                items.append((rec["t"], rec["r"]))
            except (ValueError, KeyError, TypeError):
                log.warning("tuneloop spool %s line %d is not a row; skipped", path, n)
                continue
            lines.append(line)
            if len(items) >= size:
                yield items, lines
                items, lines = [], []
    if items:
        yield items, lines

