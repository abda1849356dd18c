"""Segment pairs for next-sentence (NSP) and sentence-order (SOP) prediction, cut from tokenized documents.

A document's sentences (its lines, each split after . ! or ? before a capital or a digit) lie back to
back; it is cut into chunks of whole sentences of at most `budget` tokens (max_seq_length - 3; a longer
sentence is cut into budget-sized pieces), and each chunk becomes one example [CLS] A [SEP] B [SEP]
with A ending at a sentence end (a chunk of one sentence is cut at a random token):

    nsp: half the time B is replaced by text from another document, started at one of its sentences
         (label 1, and the chunk's B part begins the next chunk, as BERT's create_pretraining_data does);
         otherwise B is the text that follows A (label 0).
    sop: half the time A and B are swapped (label 1).

The draws come from a fixed seed, so the same corpus always gives the same pairs (masking still
changes every epoch). Another document is drawn from this batch of documents or the one before.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

NOT_NEXT = 1  # the label of a random (nsp) or swapped (sop) pair, as BertForPreTraining's next_sentence_label


@dataclass
class Document:
    columns: dict[str, np.ndarray]  # input_ids (and word_starts) of its sentences back to back
    ends: np.ndarray  # the token offset just after each sentence

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0


class PairMaker:
    def __init__(self, task: str, budget: int, special: dict[str, tuple], seed: int):
        """`special[column]` is that column's value at (the [CLS], each [SEP])."""
        self.task, self.budget, self.special = task, budget, special
        self.rng = random.Random(seed)
        self.previous: list[Document] = []

    def rows(self, documents: list[Document]) -> dict[str, list[np.ndarray]]:
        """One batch of documents' examples: column -> one array per example, and next_sentence_label."""
        out: dict[str, list] = {column: [] for column in [*self.special, "token_type_ids", "next_sentence_label"]}
        pool = [document for document in self.previous + documents if len(document)]  # where random Bs come from
        for document in documents:
            position = 0
            while len(document) - position >= 2:
                end = self._chunk_end(document, position)
                cut = self._cut(document, position, end)
                a, b, label = (position, cut), (cut, end), 0
                if self.task == "nsp" and len(pool) > 1 and self.rng.random() < 0.5:
                    other = document
                    while other is document:
                        other = self.rng.choice(pool)
                    start = self.rng.choice([0, *other.ends[:-1].tolist()])
                    stop = min(len(other), start + self.budget - (cut - position))
                    self._append(out, (document, a), (other, (start, stop)), NOT_NEXT)
                    position = cut  # what followed A is not lost: the next chunk starts with it
                    continue
                first, second = (document, a), (document, b)
                if self.task == "sop" and self.rng.random() < 0.5:
                    first, second, label = second, first, NOT_NEXT
                self._append(out, first, second, label)
                position = end
        self.previous = documents
        return out

    def _chunk_end(self, document: Document, position: int) -> int:
        """After the last sentence that fits the budget; a sentence longer than the budget is cut (so is
        one that would leave the chunk a single token, too short to make two segments)."""
        limit = min(len(document), position + self.budget)
        last = np.searchsorted(document.ends, limit, side="right") - 1
        return int(document.ends[last]) if last >= 0 and document.ends[last] >= position + 2 else limit

    def _cut(self, document: Document, position: int, end: int) -> int:
        """Where A ends: at a sentence end inside the chunk, else at a random token."""
        inside = document.ends[(document.ends > position) & (document.ends < end)]
        return int(self.rng.choice(inside.tolist())) if len(inside) else self.rng.randint(position + 1, end - 1)

    def _append(self, out: dict, first: tuple, second: tuple, label: int) -> None:
        for column, (head, separator) in self.special.items():
            parts = [np.array([head])]
            for document, (start, stop) in (first, second):
                segment = document.columns[column][start:stop]
                if column == "word_starts":  # a segment cut inside a word starts a word of its own
                    segment = segment.copy()
                    segment[:1] = True
                parts += [segment, np.array([separator])]
            out[column].append(np.concatenate(parts).astype(document.columns[column].dtype))
        length_a = first[1][1] - first[1][0]
        length = len(out["input_ids"][-1])
        out["token_type_ids"].append(np.repeat(np.int8([0, 1]), [length_a + 2, length - length_a - 2]))
        out["next_sentence_label"].append(label)
