"""Labelled examples for fine-tuning: read, check, map labels to ids, tokenize — per task.

Labels may be strings or integers; they are kept as strings (`"0"`, `"positive"`) and numbered in
sorted order (numeric order when all are integers). The mapping is saved in the model config as
`id2label` / `label2id`, which is where evaluate and infer read it back from. Regression targets
are floats; multi-label rows hold a list of labels (or one string split on data.label_separator);
token classification rows hold `tokens` and `tags` lists (CoNLL files are read into those).
"""

from __future__ import annotations

from llmkit.config import Config, data_path
from llmkit.data.files import read_file, require_columns
from llmkit.errors import LlmkitError

SPLIT_KEYS = {"train": "data.train_file", "validation": "data.validation_file", "test": "data.test_file"}


def text_columns(cfg: Config) -> list[str]:
    if cfg.finetune.task == "token_classification":
        return [cfg.data.tokens_column]
    return [cfg.data.text_column] + ([cfg.data.text_pair_column] if cfg.data.text_pair_column else [])


def label_column(cfg: Config) -> str:
    return cfg.data.tags_column if cfg.finetune.task == "token_classification" else cfg.data.label_column


def read_split(cfg: Config, split: str, with_labels: bool = True):
    """The raw rows of a split (`train`, `validation`, `test`), first N rows only when configured."""
    key = SPLIT_KEYS[split]
    path = data_path(cfg, key.split(".")[1])
    if path is None:
        raise LlmkitError(f"{key}: required for this stage")
    dataset = read_file(path, key)
    columns = text_columns(cfg) + ([label_column(cfg)] if with_labels else [])
    require_columns(dataset, columns, path, key)
    limit = cfg.data.max_train_samples if split == "train" else cfg.data.max_eval_samples
    if limit:
        dataset = dataset.select(range(min(limit, len(dataset))))
    for column in columns:
        _check_no_nulls(dataset, column, path, key)
    return dataset, path, key


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


def encode(cfg: Config, dataset, tokenizer, label2id: dict[str, int] | None, path: str, key: str):
    """Tokenized rows with `labels` for the task (none when label2id is None and the task needs it)."""
    task = cfg.finetune.task
    if task == "token_classification":
        return _encode_tokens(cfg, dataset, tokenizer, label2id, path, key)
    text, pair, column = cfg.data.text_column, cfg.data.text_pair_column, cfg.data.label_column
    targets = None
    if column in dataset.column_names:
        values = dataset[column]
        if task == "regression":
            targets = [_number(v, row, path, key) for row, v in enumerate(values)]
        elif task == "multi_label_classification":
            targets = []
            for row, value in enumerate(values):
                hot = [0.0] * len(label2id)
                for name in _label_list(cfg, value):
                    hot[_label_id(label2id, name, row, path, key)] = 1.0
                targets.append(hot)
        else:
            targets = [_label_id(label2id, str(v), row, path, key) for row, v in enumerate(values)]

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


def _encode_tokens(cfg: Config, dataset, tokenizer, label2id, path: str, key: str):
    """Sub-tokens labelled from their word: the first sub-token gets the word's tag, the others are
    ignored (or, with finetune.label_all_tokens, get the tag's I- form). `word_ids` / `word_labels`
    keep the whole gold sequence, so evaluation scores every word, truncated ones included."""
    if not tokenizer.is_fast:
        raise LlmkitError("tokenizer: token classification needs a fast tokenizer (word ids)")
    words_column, tags_column = cfg.data.tokens_column, cfg.data.tags_column
    with_tags = tags_column in dataset.column_names
    inside = {i: label2id.get("I-" + name[2:], i) for name, i in label2id.items() if name.startswith("B-")}

    def tokenize(batch, indices):
        encoded = tokenizer(batch[words_column], is_split_into_words=True, truncation=True,
                            max_length=cfg.data.max_seq_length)
        out = {"input_ids": encoded["input_ids"], "word_ids": []}
        if "token_type_ids" in encoded:
            out["token_type_ids"] = encoded["token_type_ids"]
        if with_tags:
            out["labels"], out["word_labels"] = [], []
        for i, index in enumerate(indices):
            word_ids = encoded.word_ids(i)
            out["word_ids"].append([-1 if w is None else w for w in word_ids])
            if not with_tags:
                continue
            words, tags = batch[words_column][i], batch[tags_column][i]
            if len(words) != len(tags):
                raise LlmkitError(f"{key}: {path} row {index + 1}: {len(words)} tokens but {len(tags)} tags")
            tag_ids = [_label_id(label2id, t, index, path, key) for t in tags]
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

    return dataset.map(tokenize, batched=True, with_indices=True, remove_columns=dataset.column_names,
                       num_proc=cfg.data.preprocessing_num_workers)


def _label_list(cfg: Config, value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [part.strip() for part in str(value).split(cfg.data.label_separator) if part.strip()]


def _label_id(label2id: dict[str, int], name: str, row: int, path: str, key: str) -> int:
    if name not in label2id:
        raise LlmkitError(f"{key}: {path} row {row + 1}: label {name!r} was not seen in training "
                          f"(the model knows {list(label2id)})")
    return label2id[name]


def _number(value, row: int, path: str, key: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise LlmkitError(f"{key}: {path} row {row + 1}: regression target {value!r} is not a number") from None


def _check_no_nulls(dataset, column: str, path: str, key: str) -> None:
    import pyarrow.compute as pc

    nulls = pc.is_null(dataset.with_format("arrow")[column])  # the selected rows, not the whole file
    if pc.any(nulls).as_py():
        row = pc.index(nulls, True).as_py()
        raise LlmkitError(f"{key}: {path} row {row + 1}: column {column!r} is empty")


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()
