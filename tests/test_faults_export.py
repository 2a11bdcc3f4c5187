"""The disk fills up during ``tuneloop export``: a clear error, and no partial file that looks complete.

The output folder is a 64 KiB tmpfs (we are root in CI); where mounting is not allowed the
export runs in a child process with ``RLIMIT_FSIZE`` = 64 KiB instead (writes past it fail
with EFBIG, the same code path as ENOSPC).
"""
from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tuneloop.capture.records import interaction_row, write_interactions

LIMIT = 64 * 1024


@contextlib.contextmanager
def small_disk(path: Path):
    """(folder, preexec_fn): a 64 KiB tmpfs at ``path``, or a file-size limit for the child."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = False
    if os.geteuid() == 0 and not os.environ.get("TUNELOOP_TEST_NO_MOUNT"):
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={LIMIT}", "tmpfs", str(path)],
                                 capture_output=True).returncode == 0

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))

    try:
        yield path, (None if mounted else limit_file_size), mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=False)


def _fill(db, n=400):
    rows = [interaction_row(query=f"question {i} " + "x" * 400, response="answer " + "y" * 400, model="m")
            for i in range(n)]
    write_interactions(db, rows)


def _export(db_url: str, output: Path, preexec):
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "tuneloop.cli", "--db", db_url, "export", "--output", str(output)],
                          capture_output=True, text=True, preexec_fn=preexec, env=env, timeout=120)


def _full_disk_export(db, db_url, tmp_path, suffix):
    _fill(db, 400 if suffix == ".jsonl" else 2000)  # ~330 KB of JSON; Parquet compresses, so more rows
    with small_disk(tmp_path / "small") as (folder, preexec, mounted):
        out = folder / f"export{suffix}"
        r = _export(db_url, out, preexec)
        leftovers = sorted(p.name for p in folder.iterdir())
    return r, out, leftovers


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_disk_full_during_export_fails_and_leaves_no_file(db, db_url, tmp_path, suffix):
    r, out, leftovers = _full_disk_export(db, db_url, tmp_path, suffix)
    assert r.returncode != 0, r.stdout
    assert not out.exists() and leftovers == [], leftovers    # no file, not even the temporary one
    assert "No space left" in r.stderr or "File too large" in r.stderr, r.stderr[-2000:]


def test_disk_full_during_export_is_a_one_line_error(db, db_url, tmp_path):
    r, _, _ = _full_disk_export(db, db_url, tmp_path, ".jsonl")
    assert "Traceback" not in r.stderr
    assert "export.jsonl" in r.stderr and ("No space left" in r.stderr or "File too large" in r.stderr)


def test_export_that_fits_is_complete(db, db_url, tmp_path):
    _fill(db, 20)
    with small_disk(tmp_path / "small") as (folder, preexec, _):
        out = folder / "ok.jsonl"
        r = _export(db_url, out, preexec)
        lines = out.read_text().splitlines() if out.exists() else []
    assert r.returncode == 0, r.stderr
    assert len(lines) == 20
