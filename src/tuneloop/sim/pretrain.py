"""The demo's "pre-existing production model": the tiny model taught a little addition.

The loop starts from a weak champion: at the demo's temperature it gets about half of the sums
right but rarely answers with the number alone, so few users are satisfied — unless its system
prompt says ``AdditionTask.INSTRUCTION`` (a prompt challenger can find that; fine-tuning fixes
the sums). A plain PyTorch loop: the whole step fits on a screen.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from tuneloop.sim.world import AdditionTask

MARKER = "tuneloop_pretrain.json"
RECIPE = 3  # 2: some chats carry a system prompt; 3: AdditionTask.INSTRUCTION is obeyed 70% of the time


def pretrain_addition(tiny_path: Path, out: Path, *, steps: int = 400, batch: int = 64, lr: float = 3e-3,
                      seed: int = 0, task: AdditionTask | None = None) -> Path:
    """Full fine-tune ``tiny_path`` on ``steps`` batches of sums; cached in ``out``."""
    from filelock import FileLock

    out = Path(out)
    # "recipe" changes whenever the pretraining text does, so cached bases are rebuilt.
    info = {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "source": str(tiny_path), "recipe": RECIPE}
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):  # parallel test workers build it once
        if (out / MARKER).exists() and json.loads((out / MARKER).read_text()) == info:
            return out
        return _pretrain(tiny_path, out, info, steps=steps, batch=batch, lr=lr, seed=seed, task=task)


def _pretrain(tiny_path: Path, out: Path, info: dict, *, steps: int, batch: int, lr: float, seed: int,
              task: AdditionTask | None) -> Path:
    import torch

    task = task or AdditionTask(seed=seed)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-layer model: one thread is faster, and far steadier on a busy machine
    try:
        return _train_and_save(tiny_path, out, info, task, rng, steps=steps, batch=batch, lr=lr)
    finally:
        torch.set_num_threads(threads)


def _train_and_save(tiny_path: Path, out: Path, info: dict, task: AdditionTask, rng: random.Random, *,
                    steps: int, batch: int, lr: float) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        # 1. a batch of chats; the loss covers the assistant's answer only
        ids, labels = [], []
        for system, prompt, answer in task.training_examples(batch, rng):
            chat = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
            head = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
            p = tok(head, add_special_tokens=False)["input_ids"]
            a = tok(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
            ids.append(p + a)
            labels.append([-100] * len(p) + a)
        width = max(map(len, ids))
        pad = tok.pad_token_id
        x = torch.tensor([s + [pad] * (width - len(s)) for s in ids])
        y = torch.tensor([s + [-100] * (width - len(s)) for s in labels])
        mask = (torch.arange(width)[None, :] < torch.tensor([len(s) for s in ids])[:, None]).long()
        # 2. one optimizer step
        loss = model(input_ids=x, attention_mask=mask, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps(info))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out
