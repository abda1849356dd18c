"""Labelled examples for fine-tuning: read, check, map labels to ids, tokenize — per task.

Labels may be strings or integers; they are kept as strings (`"0"`, `"positive"`) and numbered in
sorted order (numeric order when all are integers). The mapping is saved in the model config as
`id2label` / `label2id`, which is where evaluate and infer read it back from. Regression targets
are floats; multi-label rows hold a list of labels (or one string split on data.label_separator);
token classification rows hold `tokens` and `tags` lists (CoNLL files are read into those).
"""

from __future__ import annotations

import re

from llmkit.config import Config, data_path
from llmkit.data.files import first_rows, read_file, require_columns
from llmkit.errors import LlmkitError

SPLIT_KEYS = {"train": "data.train_file", "validation": "data.validation_file", "test": "data.test_file"}


def text_columns(cfg: Config) -> list[str]:
    if cfg.finetune.task == "token_classification":
        return [cfg.data.tokens_column]
    return [cfg.data.text_column] + ([cfg.data.text_pair_column] if cfg.data.text_pair_column else [])


def label_column(cfg: Config) -> str:
    return cfg.data.tags_column if cfg.finetune.task == "token_classification" else cfg.data.label_column


def read_split(cfg: Config, split: str, with_labels: bool = True, task: str | None = None):
    """The raw rows of a split (`train`, `validation`, `test`), first N rows only when configured.
    `task`: the name of a multi-task run's task, which errors then name."""
    key = f"finetune.tasks.{task}.{SPLIT_KEYS[split]}" if task else SPLIT_KEYS[split]
    path = data_path(cfg, SPLIT_KEYS[split].split(".")[1])
    if path is None:
        raise LlmkitError(f"{key}: required for this stage")
    dataset = read_file(path, key)
    columns = text_columns(cfg) + ([label_column(cfg)] if with_labels else [])
    require_columns(dataset, columns, path, key)
    limit = cfg.data.max_train_samples if split == "train" else cfg.data.max_eval_samples
    dataset = first_rows(dataset, limit)
    separator = cfg.data.multi_tag_separator
    if with_labels and separator and cfg.finetune.task == "token_classification":
        column = cfg.data.tags_column
        dataset = dataset.map(lambda row: {column: [str(t).split(separator)[0] for t in row[column]]})
    return dataset, path, key


def check_rows(cfg: Config, dataset, label2id: dict[str, int] | None, path: str, key: str):
    """Rows a task cannot use (empty cells, labels training never saw, non-numeric targets, token/tag
    counts that differ) stop the run naming the first one, or with data.skip_bad_rows are dropped
    and reported with their count and reasons. Call with label2id=None on the training split."""
    from collections import Counter

    task, labels = cfg.finetune.task, label_column(cfg)
    columns = [c for c in text_columns(cfg) + [labels] if c in dataset.column_names]
    bad: dict[int, str] = {}
    for row, values in enumerate(_rows(dataset.select_columns(columns))):
        reason = next((f"column {c!r} is empty" for c in columns if values[c] is None or values[c] == ""), None)
        if reason is None and labels in values:
            reason = _label_problem(cfg, task, values, label2id)
        if reason is not None:
            if not cfg.data.skip_bad_rows:
                raise LlmkitError(f"{key}: {path} row {row + 1}: {reason} (data.skip_bad_rows=true skips such rows)")
            bad[row] = reason
    if not bad:
        return dataset
    kinds = Counter(re.sub(r"'[^']*'|\d+", "_", reason.split(" (")[0]) for reason in bad.values())
    examples = list(dict.fromkeys(reason.split(" (")[0] for reason in bad.values()))[:3]
    print(f"{key}: skipped {len(bad)} of {len(dataset)} rows of {path}: "
          + "; ".join(f"{n} x {kind}" for kind, n in kinds.most_common())
          + f" (first: row {min(bad) + 1}; e.g. {'; '.join(examples)})")
    if len(bad) == len(dataset):
        raise LlmkitError(f"{key}: {path}: every row was skipped")
    return dataset.select([i for i in range(len(dataset)) if i not in bad])


def _rows(dataset, batch_size: int = 1000):
    for batch in dataset.iter(batch_size=batch_size):
        columns = list(batch)
        for j in range(len(batch[columns[0]])):
            yield {c: batch[c][j] for c in columns}


def _label_problem(cfg: Config, task: str, values: dict, label2id: dict[str, int] | None) -> str | None:
    value = values[label_column(cfg)]
    if task == "regression":
        try:
            float(value)
        except (TypeError, ValueError):
            return f"regression target {value!r} is not a number"
        return None
    if task == "token_classification":
        words = values[cfg.data.tokens_column]
        if len(words) != len(value):
            return f"{len(words)} tokens but {len(value)} tags"
    names = _label_list(cfg, value) if task in ("multi_label_classification", "token_classification") else [str(value)]
    unseen = [n for n in names if label2id is not None and n not in label2id]
    if unseen:
        return f"label {unseen[0]!r} was not seen in training (the model knows {list(label2id)})"
    return None


def label_names(cfg: Config, dataset) -> list[str] | None:
    """The label vocabulary of the training rows (None for regression)."""
    task, column = cfg.finetune.task, label_column(cfg)
    if task == "regression":
        return None
    if task in ("multi_label_classification", "token_classification"):
        names = {name for value in dataset[column] for name in _label_list(cfg, value)}
    else:
        names = {str(v) for v in dataset.unique(column)}
    if all(_is_int(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def encode(cfg: Config, dataset, tokenizer, label2id: dict[str, int] | None):
    """Tokenized rows (checked by check_rows) with the task's `labels` when the label column is there."""
    task = cfg.finetune.task
    if task == "token_classification":
        return _encode_tokens(cfg, dataset, tokenizer, label2id)
    text, pair, column = cfg.data.text_column, cfg.data.text_pair_column, cfg.data.label_column
    targets = None
    if column in dataset.column_names:
        values = dataset[column]
        if task == "regression":
            targets = [float(v) for v in values]
        elif task == "multi_label_classification":
            targets = []
            for value in values:
                hot = [0.0] * len(label2id)
                for name in _label_list(cfg, value):
                    hot[label2id[name]] = 1.0
                targets.append(hot)
        else:
            targets = [label2id[str(v)] for v in values]

    def tokenize(batch, indices):
        encoded = tokenizer(batch[text], batch[pair] if pair else None, truncation=True,
                            max_length=cfg.data.max_seq_length)
        out = {"input_ids": encoded["input_ids"]}
        if "token_type_ids" in encoded:
            out["token_type_ids"] = encoded["token_type_ids"]
        if targets is not None:
            out["labels"] = [targets[i] for i in indices]
        return out

    return dataset.map(tokenize, batched=True, with_indices=True, remove_columns=dataset.column_names,
                       num_proc=cfg.data.preprocessing_num_workers)


def _encode_tokens(cfg: Config, dataset, tokenizer, label2id):
    """Sub-tokens labelled from their word: the first sub-token gets the word's tag, the others are
    ignored (or, with finetune.label_all_tokens, get the tag's I- form). `word_ids` / `word_labels`
    keep the whole gold sequence, so evaluation scores every word, truncated ones included."""
    if not tokenizer.is_fast:
        raise LlmkitError("tokenizer: token classification needs a fast tokenizer (word ids)")
    words_column, tags_column = cfg.data.tokens_column, cfg.data.tags_column
    with_tags = tags_column in dataset.column_names
    inside = {i: label2id.get("I-" + name[2:], i) for name, i in label2id.items() if name.startswith("B-")}

    def tokenize(batch):
        encoded = tokenizer(batch[words_column], is_split_into_words=True, truncation=True,
                            max_length=cfg.data.max_seq_length)
        out = {"input_ids": encoded["input_ids"], "word_ids": []}
        if "token_type_ids" in encoded:
            out["token_type_ids"] = encoded["token_type_ids"]
        if with_tags:
            out["labels"], out["word_labels"] = [], []
        for i in range(len(batch[words_column])):
            word_ids = encoded.word_ids(i)
            out["word_ids"].append([-1 if w is None else w for w in word_ids])
            if not with_tags:
                continue
            tag_ids = [label2id[t] for t in batch[tags_column][i]]
            labels, previous = [], None
            for word in word_ids:
                if word is None:
                    labels.append(-100)
                elif word != previous:
                    labels.append(tag_ids[word])
                else:
                    labels.append(inside.get(tag_ids[word], tag_ids[word]) if cfg.finetune.label_all_tokens else -100)
                previous = word
            out["labels"].append(labels)
            out["word_labels"].append(tag_ids)
        return out

    return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names,
                       num_proc=cfg.data.preprocessing_num_workers)


def _label_list(cfg: Config, value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [part.strip() for part in str(value).split(cfg.data.label_separator) if part.strip()]


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()
