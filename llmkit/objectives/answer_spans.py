"""Extractive answers from start/end logits, and SQuAD's scores, without torch.

A question's context may be cut into several windows. Each window proposes its best spans (the n-best start
and end tokens that make a span of context tokens, end not before start, at most max_answer_length tokens),
as character offsets into the context, scored start logit + end logit; its null score is the logits' sum
at CLS (position 0). The question's answer is the best span over all its windows (as Hugging Face's
run_qa.py post-processes); with SQuAD v2 it is "" when the smallest null score beats the best span by more
than null_score_diff_threshold. Scores are the softmax over the question's n-best candidates.

Exact match and F1 follow the official SQuAD v1.1 evaluation script: lower case, punctuation, the articles
a/an/the and extra whitespace removed; F1 over the bag of tokens; the best over the gold answers; reported
as percentages. An unanswerable question (no gold answer) counts as the empty answer, as v2's script does.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

import numpy as np

NO_SPAN = -1  # a token offset outside the context: the question, special tokens, padding


@dataclass(frozen=True)
class Window:
    """What one window says about its question: CLS's score and its best spans (score, start char, end char)."""

    null_score: float
    spans: list[tuple[float, int, int]]


def window_spans(start_logits, end_logits, offsets, n_best: int, max_answer_length: int) -> Window:
    """A window's null score and best spans. `offsets[i]`: the (start, end) characters of token i in the
    context, NO_SPAN for a token outside it."""
    start_logits, end_logits = np.asarray(start_logits, float), np.asarray(end_logits, float)
    offsets = np.asarray(offsets).reshape(-1, 2)
    in_context = offsets[:, 0] != NO_SPAN
    spans = []
    for start in np.argsort(-start_logits, kind="stable")[:n_best]:
        for end in np.argsort(-end_logits, kind="stable")[:n_best]:
            if start >= len(offsets) or end >= len(offsets) or not (in_context[start] and in_context[end]):
                continue
            if end < start or end - start + 1 > max_answer_length:
                continue
            spans.append((float(start_logits[start] + end_logits[end]), int(offsets[start][0]), int(offsets[end][1])))
    return Window(float(start_logits[0] + end_logits[0]), spans)


def best_answer(windows: list[Window], context: str, n_best: int, version_2: bool = False,
                null_threshold: float = 0.0) -> dict:
    """{answer, score, start, end} of a question from all of its windows (start/end: characters of the
    context; -1 and "" for no answer)."""
    candidates = sorted((span for window in windows for span in window.spans), key=lambda s: -s[0])[:n_best]
    null_score = min(window.null_score for window in windows) if windows else 0.0
    scores = [s[0] for s in candidates] + ([null_score] if version_2 or not candidates else [])
    probabilities = np.exp(np.array(scores) - max(scores))
    probabilities /= probabilities.sum()
    if not candidates or (version_2 and null_score - candidates[0][0] > null_threshold):
        return {"answer": "", "score": float(probabilities[-1]), "start": -1, "end": -1}
    _, start, end = candidates[0]
    return {"answer": context[start:end], "score": float(probabilities[0]), "start": start, "end": end}


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


PUNCTUATION = set(string.punctuation)


def exact_match(predicted: str, gold: str) -> float:
    return float(normalize_answer(predicted) == normalize_answer(gold))


def f1(predicted: str, gold: str) -> float:
    """Token F1 of two answers; an empty one scores 1 only against another empty one."""
    predicted_tokens, gold_tokens = normalize_answer(predicted).split(), normalize_answer(gold).split()
    if not predicted_tokens or not gold_tokens:
        return float(predicted_tokens == gold_tokens)
    common = sum((Counter(predicted_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predicted: list[str], golds: list[list[str]]) -> dict:
    """Exact match and F1 (percentages), each the best over a question's gold answers, averaged over questions."""
    golds = [answers or [""] for answers in golds]
    em = [max(exact_match(p, g) for g in answers) for p, answers in zip(predicted, golds)]
    token_f1 = [max(f1(p, g) for g in answers) for p, answers in zip(predicted, golds)]
    count = max(len(predicted), 1)
    return {"exact_match": 100 * sum(em) / count, "f1": 100 * sum(token_f1) / count}
