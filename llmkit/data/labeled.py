"""Labelled examples for fine-tuning: read, check, map labels to ids, tokenize.

Labels may be strings or integers; they are kept as strings (`"0"`, `"positive"`) and numbered in
sorted order (numeric order when all are integers). The mapping is saved in the model config as
`id2label` / `label2id`, which is where evaluate and infer read it back from.
"""

from __future__ import annotations

from llmkit.config import Config, data_path
from llmkit.data.files import read_file, require_columns
from llmkit.errors import LlmkitError

SPLIT_KEYS = {"train": "data.train_file", "validation": "data.validation_file", "test": "data.test_file"}


def read_split(cfg: Config, split: str, with_labels: bool = True):
    """The raw rows of a split (`train`, `validation`, `test`), first N rows only when configured."""
    key = SPLIT_KEYS[split]
    path = data_path(cfg, key.split(".")[1])
    if path is None:
        raise LlmkitError(f"{key}: required for this stage")
    dataset = read_file(path, key)
    columns = [cfg.data.text_column] + ([cfg.data.text_pair_column] if cfg.data.text_pair_column else [])
    require_columns(dataset, columns + ([cfg.data.label_column] if with_labels else []), path, key)
    limit = cfg.data.max_train_samples if split == "train" else cfg.data.max_eval_samples
    if limit:
        dataset = dataset.select(range(min(limit, len(dataset))))
    for column in columns + ([cfg.data.label_column] if with_labels else []):
        _check_no_nulls(dataset, column, path, key)
    return dataset, path, key


def label_names(dataset, column: str) -> list[str]:
    names = {str(v) for v in dataset.unique(column)}
    if all(_is_int(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def tokenize(cfg: Config, dataset, tokenizer, label2id: dict[str, int] | None, path: str, key: str):
    """input_ids (+ token_type_ids) and `labels` ids; a label training never saw names its row."""
    text, pair, label = cfg.data.text_column, cfg.data.text_pair_column, cfg.data.label_column
    if label2id is not None:
        for row, value in enumerate(dataset[label]):
            if str(value) not in label2id:
                raise LlmkitError(f"{key}: {path} row {row + 1}: label {str(value)!r} was not seen in training "
                                  f"(the model knows {list(label2id)})")

    def encode(batch):
        encoded = tokenizer(batch[text], batch[pair] if pair else None, truncation=True,
                            max_length=cfg.data.max_seq_length)
        out = {"input_ids": encoded["input_ids"]}
        if "token_type_ids" in encoded:
            out["token_type_ids"] = encoded["token_type_ids"]
        if label2id is not None:
            out["labels"] = [label2id[str(v)] for v in batch[label]]
        return out

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names,
                       num_proc=cfg.data.preprocessing_num_workers)


def _check_no_nulls(dataset, column: str, path: str, key: str) -> None:
    import pyarrow.compute as pc

    nulls = pc.is_null(dataset.data.column(column))
    if pc.any(nulls).as_py():
        row = pc.index(nulls, True).as_py()
        raise LlmkitError(f"{key}: {path} row {row + 1}: column {column!r} is empty")


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()
