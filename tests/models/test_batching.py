import threading
import time

from tuneloop.models.batching import MicroBatcher
from tuneloop.models.scripted import ScriptedBackend


class CountingBackend(ScriptedBackend):
    def __init__(self):
        super().__init__(lambda msgs: msgs[-1]["content"].upper())
        self.batch_sizes = []

    def chat_batch(self, conversations, **params):
        self.batch_sizes.append(len(conversations))
        time.sleep(0.05)  # a model step: callers arriving meanwhile join the next batch
        return super().chat_batch(conversations, **params)


def test_concurrent_calls_are_answered_in_batches_each_with_its_own_answer():
    inner = CountingBackend()
    b = MicroBatcher(inner, max_batch=8, max_wait_ms=30)
    results = {}

    def ask(i):
        results[i] = b.chat([{"role": "user", "content": f"q{i}"}], temperature=0.5).text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.close()
    assert results == {i: f"Q{i}" for i in range(16)}
    assert sum(inner.batch_sizes) == 16 and max(inner.batch_sizes) > 1 and len(inner.batch_sizes) < 16


def test_errors_reach_every_caller():
    b = MicroBatcher(ScriptedBackend({}, fail_with=RuntimeError("model down")))
    try:
        b.chat([{"role": "user", "content": "x"}])
    except RuntimeError as exc:
        assert "model down" in str(exc)
    else:
        raise AssertionError("the error was swallowed")
    b.close()
