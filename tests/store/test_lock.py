"""The leader lock: two daemons on one database, one works; when it dies the other takes over."""
import signal
import subprocess
import sys
import textwrap
import time

from tuneloop.store import Database
from tuneloop.store.lock import LeaderLock

HOLDER = textwrap.dedent("""
    import sys, time
    from tuneloop.store import Database
    from tuneloop.store.lock import LeaderLock
    lock = LeaderLock(Database.open(sys.argv[1]))
    assert lock.acquire(timeout=30)
    print("held", flush=True)
    time.sleep(600)
""")


def test_second_daemon_waits_then_takes_over_when_the_first_dies(db_url):
    first = subprocess.Popen([sys.executable, "-c", HOLDER, db_url], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "held"
        second = LeaderLock(Database.open(db_url))
        assert not second.acquire(timeout=1.0, poll=0.1)  # the leader is alive: wait
        first.send_signal(signal.SIGKILL)  # no clean release: the OS / the server frees the lock
        first.wait(timeout=10)
        t0 = time.monotonic()
        assert second.acquire(timeout=20, poll=0.1)
        assert time.monotonic() - t0 < 20
        second.release()
    finally:
        if first.poll() is None:
            first.kill()


def test_lock_is_reentrant_free_after_release(db):
    a, b = LeaderLock(db), LeaderLock(db)
    assert a.acquire(timeout=1)
    a.release()
    assert b.acquire(timeout=1)
    b.release()
