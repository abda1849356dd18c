"""Using a model as it is, with no training (`infer.task`): sentence embeddings (`embed`) and zero-shot
classification (`zero_shot`), through llmkit.embeddings. `infer` writes {text, embedding} (or one .npy
array) and {text, label, score, scores}; `evaluate` scores pairs against a similarity label (Spearman /
Pearson of their cosine, e.g. STS-B) and zero-shot labels by classification metrics."""

from __future__ import annotations

from llmkit.data.files import first_rows, read_rows, require_columns
from llmkit.embeddings import Embedder, ZeroShot
from llmkit.errors import LlmkitError
from llmkit.metrics import classification_metrics, regression_metrics
from llmkit.objectives.base import Family, refuse_predictions
from llmkit.paths import split_file, split_key


class Use(Family):
    """A use of an untrained model: `evaluation` and `predictor` are all it has."""

    @classmethod
    def labelled_rows(cls, cfg, split: str, columns: list[str]):
        key, path = split_key(split), split_file(cfg.data, split)
        if path is None:
            raise LlmkitError(f"{key}: required to evaluate on the {split} split")
        rows = read_rows(cfg.data, path, key)
        require_columns(rows, columns, path, key, cfg.data)
        return first_rows(rows, cfg.data.max_eval_samples), path, key


class SentenceEmbedding(Use):
    @classmethod
    def evaluation(cls, cfg, split: str, source: str, tokenizer, accelerator, task: str | None = None,
                   predictions: list | None = None) -> dict:
        import torch

        refuse_predictions(cls, predictions)
        d = cfg.data
        if d.text_pair_column is None:
            raise LlmkitError("data.text_pair_column: evaluating embeddings scores sentence pairs; name the second "
                              "sentence's column (and data.label_column their similarity score)")
        rows, _, _ = cls.labelled_rows(cfg, split, [d.text_column, d.text_pair_column, d.label_column])
        texts, pairs = [str(t) for t in rows[d.text_column]], [str(t) for t in rows[d.text_pair_column]]
        vectors = Embedder(cfg, source, tokenizer, accelerator, cfg.train.per_device_eval_batch_size)(texts + pairs)
        cosine = torch.nn.functional.cosine_similarity(vectors[:len(texts)], vectors[len(texts):]).tolist()
        scores = regression_metrics([float(v) for v in rows[d.label_column]], cosine)
        return {"num_examples": len(texts), "spearman": scores["spearman"], "pearson": scores["pearson"]}

    @classmethod
    def predictor(cls, cfg, source: str, tokenizer, run):
        embed = Embedder(cfg, source, tokenizer, run.accelerator, run.batch_size)
        return lambda examples: [{**e, "embedding": v}
                                 for e, v in zip(examples, embed([e["text"] for e in examples]).tolist())]


class ZeroShotClassification(Use):
    @classmethod
    def evaluation(cls, cfg, split: str, source: str, tokenizer, accelerator, task: str | None = None,
                   predictions: list | None = None) -> dict:
        refuse_predictions(cls, predictions)
        d, names = cfg.data, list(cfg.infer.labels)
        rows, path, key = cls.labelled_rows(cfg, split, [d.text_column, d.label_column])
        gold = [str(v) for v in rows[d.label_column]]
        unknown = next((i for i, g in enumerate(gold) if g not in cfg.infer.labels), None)
        if unknown is not None:
            raise LlmkitError(f"{key}: {path} row {unknown + 1}: label {gold[unknown]!r} is not one of infer.labels "
                              f"({', '.join(names)})")
        classifier = ZeroShot(cfg, source, tokenizer, accelerator, cfg.train.per_device_eval_batch_size)
        predicted = [names.index(p["label"]) for p in classifier.predict([str(t) for t in rows[d.text_column]])]
        return {"num_examples": len(gold),
                **classification_metrics([names.index(g) for g in gold], predicted, dict(enumerate(names)))}

    @classmethod
    def predictor(cls, cfg, source: str, tokenizer, run):
        classifier = ZeroShot(cfg, source, tokenizer, run.accelerator, run.batch_size)
        return lambda examples: [{**e, **p} for e, p in zip(examples, classifier.predict([e["text"] for e in examples]))]
