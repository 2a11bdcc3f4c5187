"""The ``local`` backend: transformers on CPU or GPU, a base model plus optional LoRA adapters.

Versions of one base share its weights: a :class:`LocalModelPool` loads each base once and
attaches every version's PEFT adapter to it by name (``PeftModel.load_adapter``). A generation
selects its version's adapter (``set_adapter``, or ``disable_adapter()`` for the bare base) and
generates under the base's lock, so concurrent requests for different versions never see
each other's adapter.

>>> pool = LocalModelPool()                                   # doctest: +SKIP
>>> champion = pool.backend("smollm2")                        # doctest: +SKIP
>>> challenger = pool.backend("smollm2", "runs/r1/adapter")   # doctest: +SKIP
>>> challenger.chat([{"role": "user", "content": "Capital of France? One word."}]).text  # doctest: +SKIP
'Paris'
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.errors import ConfigError, UpstreamError, ValidationError
from tuneloop.models.base import Completion, Message
from tuneloop.models.resolve import offline_env, resolve_model

_SAMPLING_KEYS = {"max_tokens", "max_new_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
                  "seed", "stop", "repetition_penalty"}
# OpenAI request fields a local model has no use for: accepted and ignored, so a gateway can pass
# a request through. Anything else is a typo and an error.
_IGNORED_KEYS = {"user", "n", "model", "stream", "stream_options", "presence_penalty", "frequency_penalty",
                 "logit_bias", "logprobs", "top_logprobs", "response_format", "tools", "tool_choice", "metadata"}


def pick_dtype(device: str, dtype: Any = "auto"):
    """fp32 on CPU; bf16 on a GPU that supports it (else fp16) -- unless ``dtype`` says otherwise."""
    import torch

    if dtype not in (None, "auto"):
        return getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if str(device).startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def validate_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Check a chat list and return plain ``{"role", "content"}`` dicts."""
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes) or not messages:
        raise ValidationError("messages must be a non-empty list of {'role', 'content'} objects", field="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValidationError(f"messages[{i}] needs a string 'role'", field=f"messages[{i}]")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise ValidationError(f"messages[{i}].content must be text", field=f"messages[{i}].content")
        out.append({"role": m["role"], "content": content})
    return out


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; say whether one was found."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


@dataclass
class LoadedBase:
    """One base model in memory with the adapters attached to it, and the lock guarding both."""

    path: Path
    model: Any
    tokenizer: Any
    device: str
    lock: threading.RLock = field(default_factory=threading.RLock)
    adapters: dict[str, str] = field(default_factory=dict)  # adapter folder -> adapter name

    peft: Any = None  # the PeftModel wrapping ``model`` once an adapter is attached

    def attach(self, adapter_path: str | os.PathLike) -> str:
        """Load the adapter at ``adapter_path`` once; return its name in this base."""
        key = str(Path(adapter_path).expanduser().resolve())
        with self.lock:
            if key in self.adapters:
                return self.adapters[key]
            if not (Path(key) / "adapter_config.json").exists():
                raise ConfigError(f"{key} is not a PEFT adapter folder (no adapter_config.json)")
            # PEFT keeps adapters in ModuleDicts: names must not contain dots.
            name = "a" + hashlib.sha1(key.encode()).hexdigest()[:12]
            try:
                if self.peft is None:
                    from peft import PeftModel

                    self.peft = PeftModel.from_pretrained(self.model, key, adapter_name=name, is_trainable=False)
                    self.peft.eval()
                else:
                    self.peft.load_adapter(key, adapter_name=name, is_trainable=False)
            except Exception as exc:  # noqa: BLE001 - e.g. an adapter trained on another base
                raise ConfigError(f"cannot attach adapter {key} to {self.path}: {exc}") from exc
            self.adapters[key] = name
            return name

    def detach(self, adapter_path: str | os.PathLike) -> None:
        key = str(Path(adapter_path).expanduser().resolve())
        with self.lock:
            name = self.adapters.pop(key, None)
            if name is not None and self.peft is not None:
                if self.peft.active_adapter == name and self.adapters:
                    self.peft.set_adapter(next(iter(self.adapters.values())))
                self.peft.delete_adapter(name)

    def generate(self, adapter_name: str | None, **kwargs: Any):
        """``generate`` through ``adapter_name`` (None: the bare base). Call it holding ``lock``.

        Once an adapter is attached, LoRA layers live inside the base's modules, so the base
        itself is only reachable with the adapters disabled.
        """
        if self.peft is None:
            return self.model.generate(**kwargs)
        if adapter_name is None:
            with self.peft.disable_adapter():
                return self.peft.generate(**kwargs)
        if self.peft.active_adapter != adapter_name:
            self.peft.set_adapter(adapter_name)
        return self.peft.generate(**kwargs)


class LocalModelPool:
    """Loads each base model once and hands out backends that share it.

    >>> pool = LocalModelPool(device="cpu")                   # doctest: +SKIP
    >>> a, b = pool.backend("tiny"), pool.backend("tiny", "adapter/")  # doctest: +SKIP
    >>> a.base is b.base                                      # doctest: +SKIP
    True
    """

    def __init__(self, *, device: str = "cpu", dtype: Any = "auto", data_dir: str | os.PathLike | None = None) -> None:
        self.device, self.dtype, self.data_dir = device, dtype, data_dir
        self._bases: dict[str, LoadedBase] = {}
        self._lock = threading.Lock()

    def base(self, base_model: str | os.PathLike) -> LoadedBase:
        path = resolve_model(base_model, self.data_dir)
        key = str(path)
        with self._lock:
            if key not in self._bases:
                self._bases[key] = self._load(path)
            return self._bases[key]

    def _load(self, path: Path) -> LoadedBase:
        offline_env()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(self.device, self.dtype))
        except Exception as exc:  # noqa: BLE001 - surface as a config problem naming the path
            raise ConfigError(f"cannot load model from {path}: {exc}") from exc
        tokenizer.padding_side = "left"  # decoder-only batching: pad on the left, generate on the right
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if tokenizer.chat_template is None:
            raise ConfigError(f"the tokenizer in {path} has no chat template")
        model.to(self.device).eval()
        return LoadedBase(path=path, model=model, tokenizer=tokenizer, device=self.device)

    def backend(self, base_model: str | os.PathLike, adapter_path: str | os.PathLike | None = None,
                **kwargs: Any) -> "LocalBackend":
        """A backend for ``base_model`` (+ ``adapter_path``) sharing this pool's weights."""
        return LocalBackend(base_model, adapter_path, pool=self, **kwargs)

    def close(self) -> None:
        with self._lock:
            self._bases.clear()


class LocalBackend:
    """Chat with a local model (optionally through a LoRA adapter); implements ``ModelBackend``.

    Parameters per call: ``max_tokens``, ``temperature`` (0 or absent: greedy), ``top_p``,
    ``top_k``, ``seed`` (reproducible sampling), ``stop``, ``repetition_penalty``.

    >>> b = LocalBackend("tiny", max_new_tokens=8)            # doctest: +SKIP
    >>> b.chat([{"role": "user", "content": "hello"}]).completion_tokens <= 8  # doctest: +SKIP
    True
    """

    def __init__(self, base_model_path: str | os.PathLike = "smollm2", adapter_path: str | os.PathLike | None = None,
                 *, device: str = "cpu", dtype: Any = "auto", max_new_tokens: int = 128, name: str | None = None,
                 pool: LocalModelPool | None = None, data_dir: str | os.PathLike | None = None,
                 max_batch_size: int = 16, defaults: dict[str, Any] | None = None) -> None:
        self._own_pool = pool is None
        self.pool = pool or LocalModelPool(device=device, dtype=dtype, data_dir=data_dir)
        self.base = self.pool.base(base_model_path)
        self.adapter_name = self.base.attach(adapter_path) if adapter_path else None
        self.adapter_path = str(adapter_path) if adapter_path else None
        self.max_new_tokens, self.max_batch_size = max_new_tokens, max_batch_size
        self.defaults = dict(defaults or {})
        self.name = name or (Path(self.adapter_path).name if self.adapter_path else self.base.path.name)

    # -- generation --------------------------------------------------------------------------
    def _generation_kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        p = {**self.defaults, **params}
        unknown = set(p) - _SAMPLING_KEYS - _IGNORED_KEYS
        if unknown:
            raise ValidationError(f"unknown generation parameter(s): {sorted(unknown)}", field="params")
        tok = self.base.tokenizer
        max_new = int(p.get("max_tokens") or p.get("max_new_tokens") or p.get("max_completion_tokens")
                      or self.max_new_tokens)
        temperature = float(p.get("temperature") or 0.0)
        kw: dict[str, Any] = {"max_new_tokens": max_new, "pad_token_id": tok.pad_token_id,
                              "eos_token_id": self.base.model.generation_config.eos_token_id or tok.eos_token_id}
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_p=float(p.get("top_p") or 1.0),
                      top_k=int(p.get("top_k") or 0))
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if p.get("repetition_penalty"):
            kw["repetition_penalty"] = float(p["repetition_penalty"])
        return kw

    def _encode(self, conversations: Sequence[Sequence[Message]], max_new: int):
        tok = self.base.tokenizer
        texts = [tok.apply_chat_template(validate_messages(c), tokenize=False, add_generation_prompt=True)
                 for c in conversations]
        # The chat template already wrote any BOS the model wants.
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        limit = getattr(self.base.model.config, "max_position_embeddings", None)
        if limit and enc["input_ids"].shape[1] + max_new > limit:
            raise ValidationError(f"prompt of {enc['input_ids'].shape[1]} tokens + {max_new} new tokens exceeds "
                                  f"the model's context of {limit}", field="messages")
        return enc.to(self.base.device)

    @staticmethod
    def _stop_list(params: dict[str, Any]) -> list[str]:
        stop = params.get("stop") or []
        return [stop] if isinstance(stop, str) else list(stop)

    def _decode_row(self, row, eos_ids: set[int], prompt_tokens: int, stop: list[str]) -> Completion:
        ids = row.tolist()
        finish = "length"
        for i, t in enumerate(ids):
            if t in eos_ids:
                ids, finish = ids[:i], "stop"
                break
        text = self.base.tokenizer.decode(ids, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, stop)
        return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=len(ids),
                          finish_reason="stop" if stopped else finish, model=self.name,
                          extra={"adapter": self.adapter_path})

    def _generate_chunk(self, conversations: Sequence[Sequence[Message]], params: dict[str, Any]) -> list[Completion]:
        import torch

        kw = self._generation_kwargs(params)
        enc = self._encode(conversations, kw["max_new_tokens"])
        eos = kw["eos_token_id"]
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.base.tokenizer.eos_token_id}
        with self.base.lock, torch.inference_mode():
            seed = params.get("seed", self.defaults.get("seed"))
            if seed is not None:
                torch.manual_seed(int(seed))
            try:
                out = self.base.generate(self.adapter_name, **enc, **kw)
            except Exception as exc:  # noqa: BLE001 - a generation failure is a backend failure
                raise UpstreamError(f"local generation failed: {exc}") from exc
        width = enc["input_ids"].shape[1]
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        stop = self._stop_list({**self.defaults, **params})
        return [self._decode_row(out[i, width:], eos_ids, int(prompt_lens[i]), stop) for i in range(out.shape[0])]

    def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        return self._generate_chunk([messages], params)[0]

    def chat_batch(self, conversations: Sequence[Sequence[Message]], **params: Any) -> list[Completion]:
        """Answer all conversations, ``max_batch_size`` at a time in one padded ``generate`` call."""
        out: list[Completion] = []
        for i in range(0, len(conversations), self.max_batch_size):
            out.extend(self._generate_chunk(conversations[i:i + self.max_batch_size], params))
        return out

    def stream(self, messages: Sequence[Message], **params: Any) -> Iterator[str]:
        """Yield text chunks as they are generated (the base stays locked until the answer ends)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        kw = self._generation_kwargs(params)
        enc = self._encode([messages], kw["max_new_tokens"])
        streamer = TextIteratorStreamer(self.base.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        cancelled, error = threading.Event(), []

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool)

        def run() -> None:
            try:
                with self.base.lock, torch.inference_mode():
                    seed = params.get("seed", self.defaults.get("seed"))
                    if seed is not None:
                        torch.manual_seed(int(seed))
                    self.base.generate(self.adapter_name, **enc, **kw, streamer=streamer,
                                       stopping_criteria=StoppingCriteriaList([_Cancel()]))
            except Exception as exc:  # noqa: BLE001 - handed to the consumer below
                error.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, name="tuneloop-local-stream", daemon=True)
        thread.start()
        yield from self._stream_text(streamer, cancelled, self._stop_list({**self.defaults, **params}))
        thread.join()
        if error:
            raise UpstreamError(f"local generation failed: {error[0]}") from error[0]

    @staticmethod
    def _stream_text(streamer, cancelled: threading.Event, stop: list[str]) -> Iterator[str]:
        held = ""  # text kept back while it could still be the start of a stop string
        keep = max((len(s) for s in stop), default=1) - 1
        done = False
        try:
            for chunk in streamer:
                if not stop:
                    if chunk:
                        yield chunk
                    continue
                held += chunk
                text, hit = cut_at_stop(held, stop)
                if hit:
                    if text:
                        yield text
                    return
                if len(held) > keep:
                    yield held[:len(held) - keep]
                    held = held[len(held) - keep:]
            done = True
            if held:
                yield held
        finally:
            if not done:  # the consumer stopped early or a stop string hit: end generation now
                cancelled.set()
                for _ in streamer:  # wait for the generating thread to finish and release the lock
                    pass

    def close(self) -> None:
        if self._own_pool:
            self.pool.close()


__all__ = ["LocalBackend", "LocalModelPool", "LoadedBase", "pick_dtype", "validate_messages", "cut_at_stop"]
