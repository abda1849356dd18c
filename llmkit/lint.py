"""The facts about a run's data that a careful user checks by hand, for `llmkit validate`: rows per split, the
label distribution and the majority-class rate, exact-duplicate texts within and across splits, and token
lengths (percentiles, the share truncated at data.max_seq_length, tokens per epoch)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any
from itertools import combinations

PERCENTILES = (50, 90, 99)
EXAMPLES = 2  # duplicate texts shown per pair of splits


@dataclass
class SplitData:
    """One split as validate read it: its config key, file, texts, labels (None for a regression target or
    unlabelled text), token counts (untruncated) and, for a task, its checked rows."""

    key: str
    path: str
    texts: list[str]
    labels: list[list[str]] | None
    lengths: list[int]
    rows: Any = None
    unit: str = "rows"  # or documents, for a pretraining corpus


def split_facts(splits: dict[str, SplitData]) -> str:
    return ", ".join(f"{name} {len(split.texts):,} {split.unit}" for name, split in splits.items())


def label_facts(split: SplitData) -> str | None:
    """`negative 52.0%, positive 48.0% (majority 52.0%)`, the most common first."""
    if not split.labels:
        return None
    counts = Counter(label for labels in split.labels for label in labels)
    total = sum(counts.values())
    shown = ", ".join(f"{label} {n / total:.1%}" for label, n in counts.most_common(8))
    more = f", and {len(counts) - 8} more" if len(counts) > 8 else ""
    if total != len(split.labels):  # tags, or several labels a row: shares of labels
        return f"{shown}{more} (of {total:,} labels)"
    return f"{shown}{more} (always predicting the majority class scores {max(counts.values()) / total:.1%})"


def duplicate_facts(splits: dict[str, SplitData]) -> list[str]:
    """Exact duplicates (after whitespace is normalised) within training data and between any two splits."""
    keys = {name: [" ".join(text.split()) for text in split.texts] for name, split in splits.items()}
    facts = []
    if "train" in keys:
        repeated = sum(n - 1 for n in Counter(keys["train"]).values() if n > 1)
        if repeated:
            facts.append(f"train repeats {repeated:,} of its texts")
    for (a, texts_a), (b, texts_b) in combinations(keys.items(), 2):
        shared = sorted(set(texts_a) & set(texts_b))
        if shared:
            examples = "; ".join(repr(_clip(text)) for text in shared[:EXAMPLES])
            facts.append(f"{len(shared):,} texts of {b} are in {a} too (e.g. {examples})")
    return facts


def length_facts(split: SplitData, max_seq_length: int, epochs: float) -> str | None:
    """Token-count percentiles, and the share truncated and tokens per epoch as trained (truncated); a corpus's
    documents are packed into blocks instead, none truncated."""
    import numpy as np

    if not split.lengths:
        return None
    lengths = np.asarray(split.lengths)
    percentiles = ", ".join(f"p{p} {int(np.percentile(lengths, p))}" for p in PERCENTILES)
    if split.rows is None:
        tokens = int(lengths.sum() * len(split.texts) / len(lengths))
        return (f"{percentiles}, max {int(lengths.max())} per document; {tokens:,} tokens"
                + (" (estimated from the first documents)" if len(lengths) < len(split.texts) else "")
                + f", packed into blocks of data.max_seq_length {max_seq_length}")
    truncated = float((lengths > max_seq_length).mean())
    per_epoch = int(np.minimum(lengths, max_seq_length).sum())
    return (f"{percentiles}, max {int(lengths.max())}; {truncated:.1%} truncated at data.max_seq_length "
            f"{max_seq_length}; {per_epoch:,} tokens per epoch ({epochs:g} epochs)")


def _clip(text: str, width: int = 50) -> str:
    return text if len(text) <= width else text[:width] + "..."
