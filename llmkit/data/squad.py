"""SQuAD-format JSON (`{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}`), flattened to one row
per question: id, title, context, question, answers ({"text": [...], "answer_start": [...]}, empty for SQuAD
v2's unanswerable questions). Whether the answers are where their offsets say is the task's check
(llmkit.objectives.question_answering), which names the question's id.
"""

from __future__ import annotations

import json

from llmkit.data.formats import open_text
from llmkit.errors import LlmkitError


def is_squad(path: str, encoding: str) -> bool:
    """A JSON document whose top level is an object with a `data` list of articles holding `paragraphs`."""
    with open_text(path, encoding) as f:
        head = f.read(4096).lstrip()
    return head.startswith("{") and '"data"' in head and '"paragraphs"' in head


def read_squad(path: str, key: str, encoding: str):
    """The questions of a SQuAD JSON file as a datasets.Dataset; a malformed entry stops with its place."""
    import datasets

    try:
        with open_text(path, encoding) as f:
            articles = json.load(f)["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise LlmkitError(f"{key}: {path} is not SQuAD JSON ({type(e).__name__}: {e})") from None
    rows = [row for a, article in enumerate(articles) for row in _article_rows(article, f"data[{a}]", path, key)]
    answers = {"text": datasets.List(datasets.Value("string")), "answer_start": datasets.List(datasets.Value("int64"))}
    features = datasets.Features({**dict.fromkeys(("id", "title", "context", "question"), datasets.Value("string")),
                                  "answers": answers})
    return datasets.Dataset.from_list(rows, features=features)


def _article_rows(article, place: str, path: str, key: str) -> list[dict]:
    title = _field(article, "title", place, path, key, str, "")
    rows = []
    for p, paragraph in enumerate(_field(article, "paragraphs", place, path, key, list)):
        where = f"{place}.paragraphs[{p}]"
        context = _field(paragraph, "context", where, path, key, str)
        for q, qa in enumerate(_field(paragraph, "qas", where, path, key, list)):
            at = f"{where}.qas[{q}]"
            answers = _field(qa, "answers", at, path, key, list, [])
            if not all(isinstance(answer, dict) and {"text", "answer_start"} <= set(answer) for answer in answers):
                raise LlmkitError(f"{key}: {path}: {at}: each answer needs `text` and `answer_start`")
            rows.append({"id": str(_field(qa, "id", at, path, key, (str, int), at)), "title": title, "context": context,
                         "question": _field(qa, "question", at, path, key, str),
                         "answers": {"text": [str(answer["text"]) for answer in answers],
                                     "answer_start": [int(answer["answer_start"]) for answer in answers]}})
    return rows


_REQUIRED = object()


def _field(entry, name: str, place: str, path: str, key: str, kind, default=_REQUIRED):
    """entry[name], of type `kind`; a missing one is `default` or an error naming its place in the file."""
    if not isinstance(entry, dict):
        raise LlmkitError(f"{key}: {path}: {place} is not a JSON object")
    if name not in entry and default is not _REQUIRED:
        return default
    value = entry.get(name)
    if not isinstance(value, kind):
        raise LlmkitError(f"{key}: {path}: {place} has no {name!r}" if value is None else
                          f"{key}: {path}: {place}.{name} is a {type(value).__name__}")
    return value
