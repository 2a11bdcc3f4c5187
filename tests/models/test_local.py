"""The local backend: batching, streaming, stop strings, adapters sharing one base, the lock."""
from __future__ import annotations

import threading

import pytest

from tuneloop.errors import ConfigError, ValidationError
from tuneloop.models.base import ModelBackend
from tuneloop.models.local import LocalBackend, cut_at_stop

PROMPTS = ["hi", "What is 12 + 7?", "Capital of France? Answer in one word please.", "Name two colors of the sky"]
CONVS = [[{"role": "user", "content": p}] for p in PROMPTS]


def test_implements_the_protocol(tiny_path, pool):
    assert isinstance(pool.backend(tiny_path), ModelBackend)


@pytest.mark.parametrize("which", ["base", "adapter"])
def test_batch_equals_single_under_greedy(which, tiny_path, tiny_adapter, pool):
    backend = pool.backend(tiny_path, tiny_adapter if which == "adapter" else None, max_new_tokens=8)
    batched = backend.chat_batch(CONVS)
    single = [backend.chat(c) for c in CONVS]
    assert [b.text for b in batched] == [s.text for s in single]
    assert [b.completion_tokens for b in batched] == [s.completion_tokens for s in single]
    # Prompts of different lengths were padded on the left, yet each row counts its own tokens.
    assert len({b.prompt_tokens for b in batched}) > 1


def test_chat_batch_chunks_by_max_batch_size(tiny_path, tiny_adapter, pool):
    small = pool.backend(tiny_path, tiny_adapter, max_new_tokens=5, max_batch_size=3)
    big = pool.backend(tiny_path, tiny_adapter, max_new_tokens=5)
    assert [c.text for c in small.chat_batch(CONVS * 2)] == [c.text for c in big.chat_batch(CONVS * 2)]


def test_pool_serves_base_and_adapters_sharing_weights(tiny_path, tiny_adapter, tiny_adapter2, pool):
    base = pool.backend(tiny_path, max_new_tokens=8)
    v1 = pool.backend(tiny_path, tiny_adapter, max_new_tokens=8)
    v2 = pool.backend(tiny_path, tiny_adapter2, max_new_tokens=8)
    assert base.base is v1.base is v2.base  # one copy of the base weights
    before = [c.text for c in base.chat_batch(CONVS)]
    outs = {name: [c.text for c in b.chat_batch(CONVS)] for name, b in (("v1", v1), ("v2", v2))}
    assert outs["v1"] != before and outs["v2"] != before and outs["v1"] != outs["v2"]
    # The base answers as before once adapters exist: disable_adapter() really bypasses them.
    assert [c.text for c in base.chat_batch(CONVS)] == before


def test_second_adapter_loads_its_own_weights(tiny_path, tiny_adapter, tiny_adapter2, pool):
    from tuneloop.models.local import LocalModelPool

    shared = pool.backend(tiny_path, tiny_adapter2, max_new_tokens=8)
    alone = LocalModelPool().backend(tiny_path, tiny_adapter2, max_new_tokens=8)
    assert [c.text for c in shared.chat_batch(CONVS)] == [c.text for c in alone.chat_batch(CONVS)]


def test_concurrent_requests_for_different_versions_do_not_mix(tiny_path, tiny_adapter, tiny_adapter2, pool):
    backends = [pool.backend(tiny_path, a, max_new_tokens=6) for a in (None, tiny_adapter, tiny_adapter2)]
    expected = [[b.chat(c).text for c in CONVS] for b in backends]
    got: dict[tuple[int, int], str] = {}

    def worker(i: int) -> None:
        for j, conv in enumerate(CONVS):
            got[(i, j)] = backends[i].chat(conv).text

    threads = [threading.Thread(target=worker, args=(i % 3,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(got[(i, j)] == expected[i][j] for (i, j) in got)


def test_stream_yields_the_same_text_as_chat(tiny_path, tiny_adapter2, pool):
    backend = pool.backend(tiny_path, tiny_adapter2, max_new_tokens=10)
    chunks = list(backend.stream(CONVS[2]))
    assert len(chunks) > 1
    assert "".join(chunks) == backend.chat(CONVS[2]).text


def test_stream_closed_early_releases_the_lock(tiny_path, tiny_adapter2, pool):
    backend = pool.backend(tiny_path, tiny_adapter2, max_new_tokens=40)
    gen = backend.stream(CONVS[2])
    next(gen)
    gen.close()
    assert backend.base.lock.acquire(timeout=10)
    backend.base.lock.release()
    assert backend.chat(CONVS[0]).text  # still usable


def test_stop_strings_cut_chat_and_stream(tiny_path, tiny_adapter2, pool):
    backend = pool.backend(tiny_path, tiny_adapter2, max_new_tokens=10)
    full = backend.chat(CONVS[2]).text
    assert len(full) >= 6
    stop = full[3:5]  # a stop string that first occurs somewhere in the middle of the answer
    cut = backend.chat(CONVS[2], stop=[stop])
    assert cut.text == full[:full.index(stop)] and cut.finish_reason == "stop"
    assert "".join(backend.stream(CONVS[2], stop=[stop])) == cut.text


def test_cut_at_stop():
    assert cut_at_stop("a, b. c", [".", ","]) == ("a", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)


def test_length_finish_and_token_counts(tiny_path, tiny_adapter, pool):
    out = pool.backend(tiny_path, tiny_adapter).chat(CONVS[1], max_tokens=3)
    assert out.completion_tokens <= 3
    if out.completion_tokens == 3:
        assert out.finish_reason == "length"


def test_sampling_is_reproducible_with_a_seed(tiny_path, tiny_adapter, pool):
    backend = pool.backend(tiny_path, tiny_adapter, max_new_tokens=8)
    a = backend.chat(CONVS[0], temperature=1.5, seed=11).text
    b = backend.chat(CONVS[0], temperature=1.5, seed=11).text
    assert a == b
    others = {backend.chat(CONVS[0], temperature=1.5, seed=s).text for s in range(12, 18)}
    assert len(others | {a}) > 1


def test_bad_input_is_a_clear_error(tiny_path, pool, tmp_path):
    backend = pool.backend(tiny_path)
    with pytest.raises(ValidationError, match="non-empty list"):
        backend.chat([])
    with pytest.raises(ValidationError, match=r"messages\[0\]"):
        backend.chat([{"content": "no role"}])
    with pytest.raises(ValidationError, match="unknown generation parameter"):
        backend.chat(CONVS[0], temprature=0.3)
    with pytest.raises(ValidationError, match="exceeds the model's context"):
        backend.chat([{"role": "user", "content": "word " * 600}])
    with pytest.raises(ConfigError, match="not a PEFT adapter"):
        pool.backend(tiny_path, tmp_path)


def test_own_pool_when_none_given(tiny_path):
    backend = LocalBackend(tiny_path, max_new_tokens=2, name="solo")
    assert backend.chat(CONVS[0]).model == "solo"
    backend.close()


def test_merged_adapter_answers_like_base_plus_adapter(tiny_path, tiny_adapter, pool, tmp_path):
    from tuneloop.models.merge import merge_adapter

    merged = merge_adapter(tiny_path, tiny_adapter, tmp_path / "merged")
    assert (merged / "config.json").exists() and not (merged / "adapter_config.json").exists()
    via_adapter = pool.backend(tiny_path, tiny_adapter, max_new_tokens=8).chat_batch(CONVS)
    via_merged = pool.backend(merged, max_new_tokens=8).chat_batch(CONVS)
    assert [c.text for c in via_merged] == [c.text for c in via_adapter]
    with pytest.raises(ConfigError, match="not empty"):
        merge_adapter(tiny_path, tiny_adapter, merged)
