"""A tiny chat model built from scratch in seconds, for fast tests and the demo.

Llama architecture (the same module names as SmolLM2, so LoRA target modules carry over),
2 layers x 128 wide, randomly initialised from a fixed seed, with a byte-level BPE tokenizer
trained locally on a fixed corpus (vocab ~512, digits split one per token, ChatML special
tokens and chat template). Same seed -> byte-identical files, so CI results repeat.

>>> import tempfile
>>> path = build_tiny_model(tempfile.mkdtemp() + "/tiny")   # ~1-2 s the first time
>>> (path / "config.json").exists()
True
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from tuneloop.errors import ConfigError

# Bump when the recipe changes, so cached folders built by an older recipe are rebuilt.
TINY_RECIPE = 1
MARKER = "tuneloop_tiny.json"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 512

# ChatML, like SmolLM2's. {% generation %} marks assistant text so TRL's assistant_only_loss works.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORDS = (
    "the of and to a in is it you that he was for on are with as I his they be at one have this from "
    "or had by word but what some we can out other were all there when up use your how said an each "
    "she which do their time if will way about many then them write would like so these her long make "
    "thing see him two has look more day could go come did number sound no most people my over know "
    "water than call first who may down side been now find any new work part take get place made live "
    "where after back little only round man year came show every good me give our under name very "
    "through just form sentence great think say help low line differ turn cause much mean before move "
    "right boy old too same tell does set three want air well also play small end put home read hand "
    "port large spell add even land here must big high such follow act why ask men change went light "
    "kind off need house picture try us again animal point mother world near build self earth father "
    "answer question capital country city yes please thanks hello sorry one-word answer sum plus "
    "minus equals user assistant system France Paris Germany Berlin Italy Rome Spain Madrid Japan Tokyo"
).split()


def _corpus() -> list[str]:
    """A fixed, varied corpus: chat turns, words, arithmetic. Deterministic by construction."""
    lines = []
    for i in range(0, len(_WORDS), 7):
        lines.append(" ".join(_WORDS[i:i + 12]) + ".")
    for a in range(0, 100, 3):
        lines.append(f"What is {a} + {a % 17}? {a + a % 17}")
    for role in ("system", "user", "assistant"):
        lines.append(f"<|im_start|>{role}\nYou are a helpful assistant.<|im_end|>")
    return lines * 3


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    # Digits one per token (arithmetic stays learnable), then byte-level so any text encodes.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None,
                                   additional_special_tokens=["<|im_start|>"], model_max_length=512)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _build_model(tokenizer, seed: int):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    # Seed the global RNG only for the init, and restore it: callers' randomness is theirs.
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.pad_token_id, do_sample=False, max_new_tokens=32,
    )
    return model


def _is_current(path: Path, seed: int) -> bool:
    marker = path / MARKER
    if not marker.exists():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("seed") == seed and info.get("recipe") == TINY_RECIPE


def build_tiny_model(path: str | os.PathLike, seed: int = 0) -> Path:
    """Build (once) the tiny chat model in ``path`` and return the folder.

    A folder already holding this recipe and seed is reused as is. The model is written to a
    temporary sibling folder and renamed into place, so a crash never leaves half a model.

    >>> import tempfile
    >>> p = build_tiny_model(tempfile.mkdtemp() + "/tiny", seed=1)
    >>> build_tiny_model(p, seed=1) == p       # cached: returns at once
    True
    """
    path = Path(path).expanduser().resolve()
    if _is_current(path, seed):
        return path
    if path.exists() and any(path.iterdir()) and not (path / MARKER).exists():
        raise ConfigError(f"{path} exists and is not a tuneloop tiny model; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tokenizer = _build_tokenizer()
        model = _build_model(tokenizer, seed)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({"seed": seed, "recipe": TINY_RECIPE}))
        if path.exists():  # an older recipe or another seed: replace it
            shutil.rmtree(path)
        try:
            os.rename(tmp, path)
        except OSError:
            if not _is_current(path, seed):  # lost a race to a different build: surface it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


__all__ = ["build_tiny_model", "CHAT_TEMPLATE", "TINY_RECIPE"]
