"""Offline evaluation: the golden set, checkers, evaluation runs and the regression gate.

>>> from tuneloop.models.scripted import ScriptedBackend
>>> examples = [{"prompt": "Capital of France? One word.", "expected": "Paris", "checker": "one_word"}]
>>> result = evaluate(ScriptedBackend(lambda m: "Paris."), examples, progress=False)
>>> gate(result, threshold=0.85).passed
True
"""
from tuneloop.evaluate.checkers import CHECKERS, CheckContext, Checker, CheckResult, check, get_checker, register_checker
from tuneloop.evaluate.gate import GateDecision, PairedComparison, compare_paired, gate, paired_bootstrap
from tuneloop.evaluate.golden import (
    GoldenExample, ImportResult, add_example, current_version, example_from_dict, export_jsonl, get_example,
    import_jsonl, list_examples, list_proposals, list_sets, propose_from_feedback, read_jsonl, review, write_jsonl,
)
from tuneloop.evaluate.retrieval_metrics import (
    RetrievalReport, hit_rate_at_k, mrr, ndcg_at_k, precision_at_k, recall_at_k, reciprocal_rank, retrieval_report,
)
from tuneloop.evaluate.runner import (
    EvalResult, ExampleResult, TagMetrics, evaluate, latest_eval_run, load_eval_run, record_eval_run, summarize,
)
from tuneloop.evaluate.suites import Suite, get_suite, list_suites, register_suite
from tuneloop.evaluate.text_metrics import BleuScore, RougeScore, bleu, rouge_l

__all__ = [
    "CHECKERS", "CheckContext", "Checker", "CheckResult", "check", "get_checker", "register_checker",
    "GateDecision", "PairedComparison", "compare_paired", "gate", "paired_bootstrap",
    "GoldenExample", "ImportResult", "add_example", "current_version", "example_from_dict", "export_jsonl",
    "get_example", "import_jsonl", "list_examples", "list_proposals", "list_sets", "propose_from_feedback",
    "read_jsonl", "review", "write_jsonl",
    "RetrievalReport", "hit_rate_at_k", "mrr", "ndcg_at_k", "precision_at_k", "recall_at_k", "reciprocal_rank",
    "retrieval_report",
    "EvalResult", "ExampleResult", "TagMetrics", "evaluate", "latest_eval_run", "load_eval_run", "record_eval_run",
    "summarize", "Suite", "get_suite", "list_suites", "register_suite", "BleuScore", "RougeScore", "bleu", "rouge_l",
]
