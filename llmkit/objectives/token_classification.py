"""A tag per word (`finetune.task: token_classification`, e.g. NER), from a *ForTokenClassification head.

Rows hold a list of words and one tag per word (CoNLL files are read into `tokens` / `tags`). Sub-tokens
are labelled from their word: the first gets the word's tag, the others are ignored (or, with
finetune.label_all_tokens, get the tag's I- form). Predictions are read at each word's first sub-token;
a word without one (dropped by the tokenizer, or cut by truncation) is predicted `O`, so gold sequences
are scored whole. `infer` writes {tokens, tags}; a .txt line is split on whitespace into words.
"""

from __future__ import annotations

from llmkit.data.batching import pad, pad_inputs
from llmkit.console import say
from llmkit.data.labeled import label_list
from llmkit.errors import LlmkitError
from llmkit.objectives.base import IGNORE_INDEX, ModelKind, mean_loss, model_inputs, token_logits
from llmkit.objectives.task import Task

TOKEN_CLASSIFICATION = ModelKind("AutoModelForTokenClassification", ("ForTokenClassification",),
                                 "token-classification", "finetune")
OUTSIDE = "O"


class TokenClassification(Task):
    model_kind = TOKEN_CLASSIFICATION
    pipeline_task = "token-classification"
    peft_task_type = "TOKEN_CLS"
    onnx_outputs = {"logits": ("batch", "sequence")}
    metric_names = ("loss", "precision", "recall", "f1", "accuracy")

    def __init__(self, cfg, tokenizer, id2label: dict[int, str]):
        super().__init__(cfg, tokenizer, id2label)
        self.outside = self.label2id.get(OUTSIDE)
        bioes = any(name.startswith(("E-", "S-")) for name in self.label2id)
        # seqeval's default (conlleval's rules) reads IOB1 and IOB2 alike; BIOES is scored by its own rules
        self.strict_scheme = "BIOES" if cfg.data.tag_scheme == "bioes" or (cfg.data.tag_scheme == "auto" and bioes) \
            else None
        # B-X -> I-X, for finetune.label_all_tokens
        self.inside = {i: self.label2id.get("I-" + name[2:], i) for name, i in self.label2id.items()
                       if name.startswith("B-")}

    @classmethod
    def text_columns(cls, data) -> list[str]:
        return [data.tokens_column]

    @classmethod
    def label_column(cls, data) -> str:
        return data.tags_column

    @classmethod
    def labels_of(cls, data, value) -> list[str]:
        return label_list(data, value)

    @classmethod
    def normalized(cls, data, rows, key: str):
        """With data.multi_tag_separator, a tag joining several (`B-creative-work,B-location`) is its first;
        tags are named (data.label_names), then IOB1 tags become IOB2 (data.tag_scheme)."""
        separator, column = data.multi_tag_separator, data.tags_column
        if column not in rows.column_names:
            return rows
        if separator is not None:
            rows = rows.map(lambda batch: {column: [None if tags is None else [str(t).split(separator)[0] for t in tags]
                                                    for tags in batch[column]]}, batched=True)
        rows = super().normalized(data, rows, key)
        if data.tag_scheme not in ("auto", "iob1"):
            return rows
        starts = sum(iob1_starts(tags) for tags in rows[column] if tags)
        if starts == 0:
            return rows
        keep = "data.tag_scheme: iob2 keeps them as they are" if data.tag_scheme == "auto" else "data.tag_scheme: iob1"
        say(f"{key}: tags are IOB1 ({starts} entities start with I-): read as IOB2, each entity starting with B- "
            f"({keep})")
        return rows.map(lambda batch: {column: [tags and iob2(tags) for tags in batch[column]]}, batched=True)

    @classmethod
    def row_problem(cls, data, values: dict, label2id) -> str | None:
        words, tags = values[data.tokens_column], values[data.tags_column]
        if len(words) != len(tags):
            return f"{len(words)} tokens but {len(tags)} tags"
        return super().row_problem(data, values, label2id)

    @classmethod
    def input_fields(cls, data) -> dict[str, str]:
        return {"tokens": data.tokens_column}

    @classmethod
    def from_line(cls, line: str) -> dict:
        return {"tokens": line.split()}

    def encode(self, rows):
        if not self.tokenizer.is_fast:
            raise LlmkitError("tokenizer: token classification needs a fast tokenizer (word ids)")
        data = self.data
        words_column, tags_column = data.tokens_column, data.tags_column
        with_tags = tags_column in rows.column_names

        def tokenize(batch):
            encoded = self.tokenizer(batch[words_column], is_split_into_words=True, truncation=True,
                                     max_length=data.max_seq_length)
            out = {"input_ids": encoded["input_ids"], "word_ids": []}
            if "token_type_ids" in encoded:
                out["token_type_ids"] = encoded["token_type_ids"]
            if with_tags:
                out["labels"], out["word_labels"] = [], []
            for i in range(len(batch[words_column])):
                word_ids = encoded.word_ids(i)
                out["word_ids"].append([-1 if w is None else w for w in word_ids])
                if with_tags:
                    tag_ids = [self.label2id[t] for t in batch[tags_column][i]]
                    out["labels"].append(self._subtoken_labels(word_ids, tag_ids))
                    out["word_labels"].append(tag_ids)
            return out

        return rows.map(tokenize, batched=True, remove_columns=rows.column_names,
                        num_proc=data.preprocessing_num_workers)

    def _subtoken_labels(self, word_ids: list, tag_ids: list[int]) -> list[int]:
        labels, previous = [], None
        for word in word_ids:
            if word is None:
                labels.append(IGNORE_INDEX)
            elif word != previous:
                labels.append(tag_ids[word])
            else:
                tag = tag_ids[word]
                labels.append(self.inside.get(tag, tag) if self.cfg.finetune.label_all_tokens else IGNORE_INDEX)
            previous = word
        return labels

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        batch = pad_inputs(rows, self.tokenizer.pad_token_id)
        if "labels" in rows:
            batch["labels"] = pad(rows["labels"], IGNORE_INDEX)
            batch["word_ids"] = pad(rows["word_ids"], -1)
            batch["word_labels"] = pad(rows["word_labels"], IGNORE_INDEX)
        return batch

    def count(self, batch):
        return (batch["labels"] != IGNORE_INDEX).sum()

    @staticmethod
    def logits(module, batch):
        return token_logits(module(**model_inputs(batch)).logits.float(), batch["input_ids"])

    def loss(self, module, batch):
        import torch.nn.functional as F

        logits = self.logits(module, batch)
        loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].view(-1),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
        return loss_sum, self.count(batch)

    def eval_outputs(self, module, batch) -> list:
        predicted = self.logits(module, batch).argmax(-1).tolist()
        outputs = []
        for row, word_ids in enumerate(batch["word_ids"].tolist()):
            gold = [t for t in batch["word_labels"][row].tolist() if t != IGNORE_INDEX]
            words = word_tags(word_ids, predicted[row], len(gold), self.outside)
            outputs.append(([self.id2label[t] for t in words], [self.id2label[t] for t in gold]))
        return outputs

    def prediction_record(self, output) -> dict:
        predicted, gold = output
        return {"gold": gold, "predicted": predicted}

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        from llmkit.metrics import entity_metrics

        predictions, labels = zip(*outputs) if outputs else ((), ())
        return {"loss": mean_loss(loss_sum, count), **entity_metrics(list(labels), list(predictions), self.strict_scheme)}

    def encode_inputs(self, examples: list[dict]):
        return self.tokenizer([e["tokens"] for e in examples], is_split_into_words=True, truncation=True,
                              max_length=self.data.max_seq_length)

    def predictions(self, logits, inputs, encoded, ids, examples, run) -> list[dict]:
        predicted = token_logits(logits, inputs["input_ids"]).argmax(-1).tolist()
        results = []
        for row, i in enumerate(ids):
            word_ids = [-1 if w is None else w for w in encoded.word_ids(i)]
            tags = word_tags(word_ids, predicted[row], len(examples[i]["tokens"]), self.outside)
            results.append({"tags": [OUTSIDE if t is None else self.id2label[t] for t in tags]})
        return results


def iob1_starts(tags: list[str]) -> int:
    """How many entities start with an I- tag (IOB1: B- only where an entity follows one of its type)."""
    return sum(1 for previous, tag in zip([OUTSIDE, *tags], tags) if _starts_with_inside(previous, tag))


def iob2(tags: list[str]) -> list[str]:
    """IOB1 tags as IOB2: every entity starts with B-."""
    return ["B-" + tag[2:] if _starts_with_inside(previous, tag) else tag
            for previous, tag in zip([OUTSIDE, *tags], tags)]


def _starts_with_inside(previous: str, tag: str) -> bool:
    return tag.startswith("I-") and previous[2:] != tag[2:]


def word_tags(word_ids: list[int], predicted: list[int], num_words: int, default):
    """A tag per word from its first sub-token (word id -1: a special token); `default` for a word with none."""
    tags = [default] * num_words
    seen = set()
    for position, word in enumerate(word_ids):
        if word >= 0 and word not in seen:
            seen.add(word)
            tags[word] = predicted[position]
    return tags
