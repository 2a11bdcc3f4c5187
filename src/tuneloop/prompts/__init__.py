"""Prompts as versions: the spec a version serves with, candidates, failure cases, rewriting.

    PromptSpec                      system prompt, template, few-shot turns, sampling (spec.py)
    load_candidates, untried        a user's YAML list of candidate prompts (candidates.py)
    collect_failures, summarize     the period's failed interactions (failures.py)
    rewrite_prompt                  a model rewrites the champion's prompt from them (rewrite.py)

The ``prompt`` trainer (:mod:`tuneloop.train.prompt`) turns these into a candidate version;
serving applies a version's spec in :mod:`tuneloop.models.factory`.
"""
from tuneloop.prompts.candidates import load_candidates, untried
from tuneloop.prompts.failures import FailureCase, collect_failures, summarize
from tuneloop.prompts.rewrite import parse_rewrite, rewrite_prompt
from tuneloop.prompts.spec import SAMPLING_KEYS, PromptSpec

__all__ = ["FailureCase", "PromptSpec", "SAMPLING_KEYS", "collect_failures", "load_candidates", "parse_rewrite",
           "rewrite_prompt", "summarize", "untried"]
