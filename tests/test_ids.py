"""UUIDv7 ids: unique, time-ordered, and never repeated by a forked child."""
import os
import uuid

import pytest

from tuneloop.ids import new_id


def test_ids_are_unique_ordered_uuid7():
    ids = [new_id() for _ in range(50_000)]  # several refills of the random pool
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    u = uuid.UUID(ids[0])
    assert u.version == 7 and u.variant == uuid.RFC_4122


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_the_parents_random_bits():
    new_id()  # the pool now holds bytes a child would inherit
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.write(w, ",".join(new_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    child = os.read(r, 4096).decode().split(",")
    parent = [new_id() for _ in range(5)]
    assert {c[-12:] for c in child}.isdisjoint(p[-12:] for p in parent)
