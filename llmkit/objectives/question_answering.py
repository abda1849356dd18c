"""Extractive question answering (`finetune.task: question_answering`), from a *ForQuestionAnswering head.

Rows are questions: question, context and answers (SQuAD JSON is read into such rows by llmkit.data.squad;
jsonl/csv files have the columns). Each answer must stand at its answer_start in the context, or its row is
bad, named by its question's id. A context longer than max_seq_length becomes overlapping windows
(data.doc_stride), so one row becomes several training examples: a window holding the (first) answer
points at its first and last token, one without it at CLS (position 0), as Hugging Face's run_qa.py does.
The loss is the mean over windows of the start and end cross-entropies' mean.

Evaluation gathers each question's windows (their example_index) and takes its best span over all of
them (llmkit.objectives.answer_spans: n-best, max_answer_length, SQuAD v2's null answer); the scores are
SQuAD's exact match and F1. `infer` reads {question, context} rows and writes {question, answer, score,
start, end} (characters of the context; "" and -1 for no answer).
"""

from __future__ import annotations

import json
from collections import defaultdict

from llmkit.data.batching import length_batches, pad_inputs
from llmkit.data.formats import PROBLEM
from llmkit.errors import LlmkitError
from llmkit.objectives.answer_spans import NO_SPAN, Window, best_answer, squad_scores, window_spans
from llmkit.objectives.base import ModelKind, mean_loss, model_inputs, pad_token_id, token_logits
from llmkit.objectives.task import Task

QUESTION_ANSWERING = ModelKind("AutoModelForQuestionAnswering", ("ForQuestionAnswering",), "question-answering",
                               "finetune")
ID = "id"  # the column naming a question in messages and predictions, when the rows have one


class QuestionAnswering(Task):
    model_kind = QUESTION_ANSWERING
    pipeline_task = None  # transformers 5 has no question-answering pipeline
    peft_task_type = "QUESTION_ANS"
    has_classes = False
    metric_names = ("loss", "exact_match", "f1")
    onnx_outputs = {"start_logits": ("batch", "sequence"), "end_logits": ("batch", "sequence")}  # per token
    onnx_card_batch = '[("What was slow?", "The food was great, but the service was slow.")]'

    def __init__(self, cfg, tokenizer, id2label: dict[int, str]):
        super().__init__(cfg, tokenizer, id2label)
        self.options = cfg.finetune.question_answering

    # ------------------------------------------------------------------ reading rows

    @classmethod
    def text_columns(cls, data) -> list[str]:
        if data.question_column is None:
            raise LlmkitError("data.question_column: question answering reads a question per row; name its column")
        return [data.question_column, data.context_column]

    @classmethod
    def label_column(cls, data) -> str:
        return data.answers_column

    @classmethod
    def label_vocabulary(cls, data, rows) -> dict[int, str]:
        return {0: "start", 1: "end"}  # the head's two outputs per token (config.num_labels)

    @classmethod
    def row_problem(cls, data, values: dict, label2id) -> str | None:
        return None  # answers are checked against their context as they are read (normalized)

    @classmethod
    def normalized(cls, data, rows, key: str):
        """Answers as {text: [...], answer_start: [...]}; one that is not at its offset makes its row bad."""
        import datasets

        column, context = data.answers_column, data.context_column
        if column not in rows.column_names:
            return rows
        features = rows.features.copy()
        features[column] = datasets.Features({"text": datasets.List(datasets.Value("string")),
                                              "answer_start": datasets.List(datasets.Value("int64"))})
        features[PROBLEM] = datasets.Value("string")

        def checked(batch: dict) -> dict:
            size = len(batch[column])
            ids, unread = batch.get(ID) or [None] * size, batch.get(PROBLEM) or [None] * size
            answers, problems = [], []
            for cell, text, question_id, problem in zip(batch[column], batch[context], ids, unread):
                read, wrong = read_answers(cell, text or "", question_id)
                answers.append(read)
                problems.append(problem or wrong)  # a line the reader could not read keeps its own reason
            return {column: answers, PROBLEM: problems}

        return rows.map(checked, batched=True, features=features)

    @classmethod
    def input_fields(cls, data) -> dict[str, str]:
        cls.text_columns(data)
        return {"question": data.question_column, "context": data.context_column}

    @classmethod
    def card_usage(cls, folder: str) -> list[str]:
        return ["import torch", *super().card_usage(folder), "",
                'question, context = "What was slow?", "The food was great, but the service was slow."',
                'inputs = tokenizer(question, context, return_tensors="pt")',
                "with torch.no_grad():", "    outputs = model(**inputs)",
                "start = int(outputs.start_logits[0].argmax())",
                "end = start + int(outputs.end_logits[0, start:].argmax())",
                'answer = tokenizer.decode(inputs["input_ids"][0, start:end + 1])',
                'print({"answer": answer, "start": start, "end": end})']

    # ------------------------------------------------------------------ windows

    def windows(self, questions: list[str], contexts: list[str]):
        """The tokenized windows of (question, context) pairs, and each token's characters in its context
        (NO_SPAN outside it): (encoding, offsets per window)."""
        if not self.tokenizer.is_fast:
            raise LlmkitError("tokenizer: question answering needs a fast tokenizer (offset mappings)")
        data = self.data
        try:
            encoded = self.tokenizer([q.lstrip() for q in questions], contexts, truncation="only_second",
                                     max_length=data.max_seq_length, stride=data.doc_stride,
                                     return_overflowing_tokens=True, return_offsets_mapping=True)
        except Exception as e:  # the tokenizer's own words for a stride that leaves no room for the context
            raise LlmkitError(f"data.doc_stride: {data.doc_stride} with data.max_seq_length {data.max_seq_length}: "
                              f"{e}; a window needs room for the question, the stride and more context (lower "
                              "doc_stride, or raise max_seq_length)") from None
        offsets = [[list(span) if sequence == 1 else [NO_SPAN, NO_SPAN]
                    for span, sequence in zip(spans, encoded.sequence_ids(i))]
                   for i, spans in enumerate(encoded["offset_mapping"])]
        return encoded, offsets

    def training_examples(self, rows) -> int:
        """A question trains on each window of its context."""
        return len(self.windows(list(rows[self.data.question_column]), list(rows[self.data.context_column]))[1])

    def encode(self, rows):
        data = self.data
        question, context, column = data.question_column, data.context_column, data.answers_column
        with_answers = column in rows.column_names

        def tokenize(batch, indices):
            encoded, offsets = self.windows(batch[question], batch[context])
            rows_of = encoded["overflow_to_sample_mapping"]
            out = {"input_ids": encoded["input_ids"], "offset_mapping": offsets,
                   "example_index": [indices[row] for row in rows_of]}
            if "token_type_ids" in encoded:
                out["token_type_ids"] = encoded["token_type_ids"]
            if with_answers:
                positions = [answer_tokens(spans, batch[column][row]) for spans, row in zip(offsets, rows_of)]
                out["start_positions"], out["end_positions"] = map(list, zip(*positions)) if positions else ([], [])
            return out

        return rows.map(tokenize, batched=True, with_indices=True, remove_columns=rows.column_names,
                        num_proc=data.preprocessing_num_workers)

    # ------------------------------------------------------------------ training and evaluation

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        import torch

        batch = pad_inputs(rows, pad_token_id(self.tokenizer))
        if "start_positions" in rows:
            batch["start_positions"] = torch.tensor(rows["start_positions"])
            batch["end_positions"] = torch.tensor(rows["end_positions"])
        batch["example_index"] = torch.tensor(rows["example_index"])
        offsets = torch.full((*batch["input_ids"].shape, 2), NO_SPAN, dtype=torch.long)
        for i, spans in enumerate(rows["offset_mapping"]):
            offsets[i, :len(spans)] = torch.tensor(spans, dtype=torch.long).view(-1, 2)
        batch["offset_mapping"] = offsets
        return batch

    def count(self, batch):
        return batch["input_ids"].new_tensor(len(batch["input_ids"]))  # windows

    @staticmethod
    def logits(module, batch):
        outputs = module(**model_inputs(batch))
        return (token_logits(outputs.start_logits.float(), batch["input_ids"]),
                token_logits(outputs.end_logits.float(), batch["input_ids"]))

    def loss(self, module, batch):
        import torch.nn.functional as F

        start, end = self.logits(module, batch)
        loss_sum = (F.cross_entropy(start, batch["start_positions"], reduction="sum")
                    + F.cross_entropy(end, batch["end_positions"], reduction="sum")) / 2
        return loss_sum, self.count(batch)

    def eval_outputs(self, module, batch) -> list:
        """(example index, the window's null score and best spans) per window."""
        start, end = (logits.cpu().numpy() for logits in self.logits(module, batch))
        windows = self.window_answers(start, end, batch["offset_mapping"].cpu().numpy())
        return list(zip(batch["example_index"].tolist(), windows))

    def window_answers(self, start, end, offsets) -> list[Window]:
        """Per window: numpy start and end logits [windows, length], its tokens' offsets in the context."""
        o = self.options
        return [window_spans(s, e, spans, o.n_best_size, o.max_answer_length)
                for s, e, spans in zip(start, end, offsets)]

    def answers(self, outputs: list, contexts: list[str]) -> list[dict]:
        """The best answer of each question from its windows' outputs: {answer, score, start, end}."""
        windows = defaultdict(list)
        for example, window in outputs:
            windows[example].append(window)
        o = self.options
        return [best_answer(windows[i], context, o.n_best_size, o.version_2_with_negative,
                            o.null_score_diff_threshold) for i, context in enumerate(contexts)]

    def _evaluated(self, outputs: list):
        rows, data = self.evaluation_rows, self.data
        predicted = self.answers(outputs, rows[data.context_column])
        return rows, predicted, [answers["text"] for answers in rows[data.answers_column]]

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        rows, predicted, golds = self._evaluated(outputs)
        return {"loss": mean_loss(loss_sum, count), **squad_scores([p["answer"] for p in predicted], golds),
                "num_questions": len(rows)}

    def prediction_records(self, outputs: list) -> list[dict]:
        rows, predicted, golds = self._evaluated(outputs)
        ids = rows[ID] if ID in rows.column_names else list(range(len(rows)))
        return [{"id": i, "question": question, "gold": gold, "predicted": p["answer"], "score": p["score"]}
                for i, question, gold, p in zip(ids, rows[self.data.question_column], golds, predicted)]

    # ------------------------------------------------------------------ infer

    def predict(self, model, examples: list[dict], run) -> list[dict]:
        """The questions' windows, batched by length; `model` (numpy inputs -> start and end logits by name,
        torch's or ONNX Runtime's) is read as evaluation reads it."""
        encoded, offsets = self.windows([e["question"] for e in examples], [e["context"] for e in examples])
        columns = [k for k in ("input_ids", "token_type_ids") if k in encoded]
        outputs = []
        for ids in length_batches([len(window) for window in offsets], run.batch_size):
            inputs = pad_inputs({k: [encoded[k][i] for i in ids] for k in columns}, pad_token_id(self.tokenizer),
                                as_numpy=True)
            logits = model(inputs)
            start, end = (token_logits(logits[name], inputs["input_ids"]) for name in self.onnx_outputs)
            windows = self.window_answers(start, end, [offsets[i] for i in ids])
            outputs.extend(zip([encoded["overflow_to_sample_mapping"][i] for i in ids], windows))
        answers = self.answers(outputs, [e["context"] for e in examples])
        return [{"question": e["question"], **answer} for e, answer in zip(examples, answers)]


def read_answers(cell, context: str, question_id=None) -> tuple[dict, str | None]:
    """({text, answer_start}, why the row is bad or None) of an answers cell: a dict of lists, a list of
    {text, answer_start}, their JSON text, or a plain answer text (found at its first place in the context)."""
    if isinstance(cell, str) and cell.lstrip()[:1] in ("{", "["):
        try:
            cell = json.loads(cell)
        except json.JSONDecodeError as e:
            return {"text": [], "answer_start": []}, f"answers are not JSON ({e})"
    if isinstance(cell, str):
        cell = {"text": [cell], "answer_start": [context.find(cell)]}
    if isinstance(cell, list):
        cell = {"text": [a.get("text") if isinstance(a, dict) else None for a in cell],
                "answer_start": [a.get("answer_start") if isinstance(a, dict) else None for a in cell]}
    if not isinstance(cell, dict) or not {"text", "answer_start"} <= set(cell):
        return {"text": [], "answer_start": []}, "answers need `text` and `answer_start`"
    texts, starts = ([v] if not isinstance(v, list) else v for v in (cell["text"], cell["answer_start"]))
    answers = {"text": [str(t) for t in texts], "answer_start": [_offset(s) for s in starts]}
    if len(texts) != len(starts):
        return answers, f"{len(texts)} answer texts but {len(starts)} answer_start offsets"
    return answers, next((answer_problem(context, text, start, question_id)
                          for text, start in zip(answers["text"], answers["answer_start"])
                          if start < 0 or context[start:start + len(text)] != text), None)


def _offset(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return NO_SPAN


def answer_problem(context: str, text: str, start: int, question_id) -> str:
    """Why an answer is not where it says; the details in brackets (bad-row summaries group by what precedes)."""
    about = f"question {question_id!r}: " if question_id is not None else ""
    if start < 0:
        return f"an answer is not in its context ({about}{text!r})"
    return (f"an answer is not at its answer_start ({about}{text!r} at {start}, where the context reads "
            f"{context[start:start + len(text)]!r})")


def answer_tokens(offsets: list[list[int]], answers: dict) -> tuple[int, int]:
    """The first and last token of the (first) answer in a window, or CLS (0, 0) when it is not all there."""
    if not answers["text"]:
        return 0, 0
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    tokens = [i for i, (start, _) in enumerate(offsets) if start != NO_SPAN]
    if not tokens or offsets[tokens[0]][0] > start_char or offsets[tokens[-1]][1] < end_char:
        return 0, 0
    return (max(i for i in tokens if offsets[i][0] <= start_char),
            min(i for i in tokens if offsets[i][1] >= end_char))
