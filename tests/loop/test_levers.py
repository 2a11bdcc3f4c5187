"""The lever policy (pure), and prompt cycles through the real loop: a scripted champion for the
fast path, the tiny addition model (a prompt cycle, then a LoRA cycle) for the slow one."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tuneloop.errors import ConfigError
from tuneloop.ids import new_id, now
from tuneloop.loop.config import LoopConfig
from tuneloop.loop.levers import CycleOutcome, LeverPolicy, choose_lever, cycle_gain
from tuneloop.loop.service import ContinuousLearningLoop
from tuneloop.registry.versions import Registry
from tuneloop.store import schema

sys.path.insert(0, str(Path(__file__).parent))
import loop_support  # noqa: E402

POLICY = LeverPolicy(order=("prompt", "adapter"), prompt_min_gain=0.02, prompt_patience=1)


# ---------------------------------------------------------------- the policy, pure
def test_prompt_first_then_adapter_when_prompts_stop_helping():
    assert choose_lever(POLICY, [], {"prompt": True}).lever == "prompt"
    helped = CycleOutcome("r1", "prompt", "promoted", 0.30)
    assert choose_lever(POLICY, [helped], {"prompt": True}).lever == "prompt"  # still helping: again
    for flop in (CycleOutcome("r2", "prompt", "rejected", None), CycleOutcome("r2", "prompt", "rolled_back", None),
                 CycleOutcome("r2", "prompt", "promoted", 0.01), CycleOutcome("r2", "prompt", "failed", None)):
        choice = choose_lever(POLICY, [flop, helped], {"prompt": True})
        assert choice.lever == "adapter" and choice.reason.startswith("prompt exhausted"), choice
    assert "0.01" not in choose_lever(POLICY, [CycleOutcome("r2", "prompt", "promoted", 0.01)]).reason
    assert "+1.0% < 2.0%" in choose_lever(POLICY, [CycleOutcome("r2", "prompt", "promoted", 0.01)]).reason


def test_patience_counts_consecutive_failures_and_an_adapter_win_resets_prompts():
    policy = LeverPolicy(order=("prompt", "adapter"), prompt_patience=2)
    one_flop = [CycleOutcome("r2", "prompt", "rejected", None), CycleOutcome("r1", "prompt", "promoted", 0.2)]
    assert choose_lever(policy, one_flop).lever == "prompt"
    two_flops = [CycleOutcome("r3", "prompt", "rejected", None)] + one_flop
    choice = choose_lever(policy, two_flops)
    assert choice.lever == "adapter" and "last 2 cycles did not help" in choice.reason
    # a fine-tuned champion gets fresh prompt attempts
    assert choose_lever(policy, [CycleOutcome("r4", "adapter", "promoted", 0.1)] + two_flops).lever == "prompt"
    # a rejected adapter cycle does not reset them
    assert choose_lever(policy, [CycleOutcome("r4", "adapter", "rejected", None)] + two_flops).lever == "adapter"


def test_unavailable_prompt_lever_and_last_resort():
    choice = choose_lever(POLICY, [], {"prompt": "all 2 candidate prompts were tried"})
    assert choice.lever == "adapter" and "prompt unavailable: all 2 candidate prompts were tried" in choice.reason
    only_prompt = LeverPolicy(order=("prompt",))
    choice = choose_lever(only_prompt, [CycleOutcome("r1", "prompt", "rejected", None)])
    assert choice.lever == "prompt" and "last resort" in choice.reason


def test_cycle_gain_prefers_the_online_test():
    assert cycle_gain({"experiment": {"improvement": 0.4}, "gate": {"pass_rate": 0.9}}) == 0.4
    assert cycle_gain({"gate": {"pass_rate": 0.5, "champion_pass_rate": 0.2}}) == pytest.approx(0.3)
    assert cycle_gain({}) is None


def test_policy_and_prompt_config_are_validated():
    with pytest.raises(ConfigError, match="unknown levers keys: prompt_gain"):
        LoopConfig(levers={"order": ["prompt"], "prompt_gain": 1})
    with pytest.raises(ConfigError, match=r"each of prompt, adapter at most once"):
        LeverPolicy(order=("prompt", "rag"))
    with pytest.raises(ConfigError, match="needs candidates"):
        LoopConfig(levers={"order": ["prompt", "adapter"]})
    with pytest.raises(ConfigError, match="candidate 2: unknown prompt field"):
        LoopConfig(levers={"order": ["prompt"]}, prompt_config={"candidates": ["ok", {"sytem": "typo"}]})
    cfg = LoopConfig(levers={"order": ["prompt", "adapter"]}, prompt_config={"candidates": ["Be brief."]})
    assert cfg.to_dict()["levers"]["order"] == ["prompt", "adapter"]
    assert LoopConfig().levers.order == ("adapter",)  # the default loop only fine-tunes


# ---------------------------------------------------------------- a prompt cycle, scripted champion (fast)
# v0 answers with loop_support.follows_instruction: a sentence, or the bare number under "number only".
def _scripted_world(db, n_failures: int = 6):
    from tuneloop.evaluate import golden

    reg = Registry(db)
    reg.register("v0", backend="scripted", base_model="scripted-addition",
                 params={"script_ref": "loop_support:follows_instruction"})
    reg.promote("v0")
    golden.import_jsonl(db, [json.dumps({"prompt": f"{a}+{a}=", "expected": str(2 * a), "checker": "exact"})
                             for a in range(6)])
    rows, fb = [], []
    for i in range(20):
        iid, bad = new_id(), i < n_failures
        rows.append({"id": iid, "ts": now() - 60 + i, "user_id": f"u{i}", "model": "tuneloop", "version_id": "v0",
                     "query": f"{i}+1=", "messages": [{"role": "user", "content": f"{i}+1="}],
                     "response": f"The answer is {i + 1}.", "reward": -1.0 if bad else 1.0,
                     "failure_category": "format_violation" if bad else None})
        if bad:
            fb.append({"id": new_id(), "interaction_id": iid, "kind": "thumbs", "value": -1, "ts": now(),
                       "text": "just the number please"})
    with db.begin() as conn:
        conn.execute(schema.interactions.insert(), rows)
        conn.execute(schema.feedback.insert(), fb)
    return [r["id"] for r in rows[:n_failures]]


def _loop_config(tmp_path, db_url, **over):
    cfg = loop_support.loop_config(tmp_path, db_url, Path("unused"), base_model="scripted-addition",
                                   levers={"order": ["prompt", "adapter"]}, **over)
    return LoopConfig.from_dict(cfg)


def _run_cycle(loop, db, max_iter=10):
    for _ in range(max_iter):
        result = loop.run_iteration()
        if result.get("state") == "experimenting":
            loop_support.synthesize_ab(db)
        if result.get("state") in ("promoted", "rejected", "rolled_back", "failed"):
            return result
    raise AssertionError(f"cycle did not finish: {result}")


def test_prompt_cycle_rewrites_from_failures_and_wins_the_ab_test(db, db_url, tmp_path):
    failed_ids = _scripted_world(db)
    cfg = _loop_config(tmp_path, db_url, prompt_config={
        "strategy": "next", "rewriter": {"backend": "scripted",
                                         "params": {"default": "<prompt>Answer with the number only.</prompt>"}}})
    loop = ContinuousLearningLoop(cfg, db=db)
    loop.trigger("prompt test")
    result = _run_cycle(loop, db)
    assert result["state"] == "promoted", result

    run = db.fetch_one(sa.select(schema.loop_runs))
    assert run["details"]["lever"] == "prompt" and run["details"]["lever_reason"] == "prompt: first lever in order"
    # 1. the dataset is the champion's failure cases, a snapshot whose members are those interactions
    ds = db.fetch_one(sa.select(schema.datasets).where(schema.datasets.c.id == run["dataset_id"]))
    assert ds["kind"] == "failures" and ds["row_count"] == 6
    assert ds["counts"]["categories"] == {"format_violation": 6} and ds["counts"]["with_comments"] == 6
    members = db.fetch_all(sa.select(schema.dataset_members.c.interaction_id)
                           .where(schema.dataset_members.c.dataset_id == ds["id"]))
    assert sorted(m["interaction_id"] for m in members) == sorted(failed_ids)
    # 2. the prompt trainer ran in place of LoRA and is recorded like any training
    tr = db.fetch_one(sa.select(schema.train_runs).where(schema.train_runs.c.id == run["train_run_id"]))
    assert (tr["backend"], tr["method"], tr["status"]) == ("prompt", "prompt", "succeeded")
    assert tr["metrics"]["source"] == "rewrite" and tr["metrics"]["failures"]["cases"] == 6
    # 3. the version: same base, no adapter, the new prompt, lineage naming the lever
    v1 = Registry(db).get("v1")
    assert v1.prompt == {"system": "Answer with the number only.", "notes": "rewritten from 6 failure cases"}
    assert v1.lever == "prompt" and v1.parent_id == "v0" and v1.adapter_path is None
    assert v1.base_model == "scripted-addition" and v1.dataset_id == ds["id"]
    # 4. the same gate as adapters: the prompted champion answers the golden set right
    assert run["details"]["gate"]["passed"] and run["details"]["gate"]["pass_rate"] == 1.0
    assert run["details"]["gate"]["champion_pass_rate"] == 0.0
    assert Registry(db).champion().id == "v1"
    levers = loop.get_status_summary()["levers"]
    assert levers["last_win"]["lever"] == "prompt" and levers["last_win"]["version_id"] == "v1"
    assert levers["per_lever"]["prompt"]["promoted"] == 1


def test_best_of_a_candidate_list_then_fall_back_to_fine_tuning(db, db_url, tmp_path):
    _scripted_world(db)
    (tmp_path / "prompts.yaml").write_text(
        "candidates:\n  - name: friendly\n    system: Be friendly and explain the answer.\n"
        "  - name: number-only\n    system: Answer with the number only.\n")
    cfg = _loop_config(tmp_path, db_url, prompt_config={"candidates": str(tmp_path / "prompts.yaml")})
    loop = ContinuousLearningLoop(cfg, db=db)
    loop.trigger("first")
    assert _run_cycle(loop, db)["state"] == "promoted"
    tr = db.fetch_one(sa.select(schema.train_runs))
    assert tr["metrics"]["chosen"] == "number-only" and tr["metrics"]["improves"] is True
    assert [s["label"] for s in tr["metrics"]["scores"]] == ["number-only", "friendly"]
    assert tr["metrics"]["champion_score"] == 0.0 and tr["metrics"]["chosen_score"] == 1.0
    assert Registry(db).get("v1").prompt["name"] == "number-only"
    # every candidate was scored: the prompt lever has nothing left and the next cycle fine-tunes
    nxt = loop.get_status_summary()["levers"]["next"]
    assert nxt["lever"] == "adapter" and "all 2 candidate prompts were tried" in nxt["reason"]
    assert loop.planned_lever() == "adapter"


def test_a_candidate_that_does_not_beat_the_champion_ends_the_cycle_before_any_traffic(db, db_url, tmp_path):
    _scripted_world(db)
    cfg = _loop_config(tmp_path, db_url, prompt_config={"candidates": ["Be friendly and explain the answer."]})
    loop = ContinuousLearningLoop(cfg, db=db)
    loop.trigger("flop")
    result = _run_cycle(loop, db)
    run = db.fetch_one(sa.select(schema.loop_runs))
    assert result["state"] == "rejected" and run["decision"] == "no better prompt"
    assert run["details"]["rejection"] == "no candidate prompt beat the champion's on the golden set (best 0% vs 0%)"
    assert Registry(db).find("v1") is None and not db.fetch_all(sa.select(schema.experiments))
    assert run["train_run_id"] is None and loop.total_retrains() == 0  # no candidate was made
    assert run["details"]["train"]["metrics"]["improves"] is False
    assert loop.planned_lever() == "adapter"


# ---------------------------------------------------------------- prompt, then LoRA, on the tiny model (slow)
@pytest.mark.slow
def test_tiny_model_prompt_cycle_then_adapter_cycle_trained_as_served(db, db_url, tmp_path):
    base = loop_support.addition_base()
    loop_support.seed_world(db, base, n=40, golden=10)
    from tuneloop.sim.world import AdditionTask

    cfg = LoopConfig.from_dict(loop_support.loop_config(
        tmp_path, db_url, base, levers={"order": ["prompt", "adapter"]},
        prompt_config={"candidates": ["Be friendly and explain the answer.", AdditionTask.INSTRUCTION]}))
    loop = ContinuousLearningLoop(cfg, db=db)
    loop.trigger("prompt first")
    assert _run_cycle(loop, db)["state"] == "promoted"
    v1 = Registry(db).get("v1")
    assert v1.lever == "prompt" and v1.prompt == {"system": AdditionTask.INSTRUCTION} and v1.adapter_path is None
    gate = db.fetch_one(sa.select(schema.loop_runs))["details"]["gate"]
    assert gate["pass_rate"] > gate["champion_pass_rate"]  # the instruction alone fixes the answers' shape

    loop.trigger("then fine-tune")
    result = _run_cycle(loop, db)
    assert result["state"] == "promoted", result
    runs = db.fetch_all(sa.select(schema.loop_runs).order_by(schema.loop_runs.c.started_at))
    assert [r["details"]["lever"] for r in runs] == ["prompt", "adapter"]
    assert "prompt unavailable" in runs[1]["details"]["lever_reason"]
    v2 = Registry(db).get("v2")
    assert v2.lever == "adapter" and v2.adapter_path and v2.prompt == v1.prompt  # the adapter serves under v1's prompt
    # trained as served: the rows the adapter learned from carry the champion's system prompt
    served = Path(runs[1]["details"]["datasets"]["sft"]["path"]).with_suffix(".as-served.jsonl")
    rows = [json.loads(x) for x in served.read_text().splitlines()]
    assert rows and all(r["messages"][0] == {"role": "system", "content": AdditionTask.INSTRUCTION} for r in rows)
    assert db.fetch_one(sa.select(schema.train_runs).where(schema.train_runs.c.id == runs[1]["train_run_id"]))["method"] == "sft"


def test_approval_mode_shows_the_approver_the_exact_prompt(db, db_url, tmp_path):
    from tuneloop.loop.approval import approve_run

    _scripted_world(db)
    cfg = _loop_config(tmp_path, db_url, require_approval=True,
                       prompt_config={"candidates": ["Answer with the number only."], "strategy": "next"})
    loop = ContinuousLearningLoop(cfg, db=db)
    loop.trigger("regulated")
    assert loop.run_iteration()["state"] == "awaiting_approval"
    run = db.fetch_one(sa.select(schema.loop_runs))
    decision = approve_run(db, run["id"], actor="alice", approve=True, reason="prompt reviewed")
    assert decision["evidence"]["lever"] == "prompt"
    assert decision["evidence"]["prompt"] == {"system": "Answer with the number only."}
    assert loop.run_iteration()["state"] == "experimenting"
