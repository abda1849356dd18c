"""Evaluation metrics, computed by scikit-learn."""

from __future__ import annotations


def classification_metrics(labels, predictions, id2label: dict[int, str]) -> dict:
    """accuracy, macro precision/recall/F1, Matthews correlation; per-class scores and the confusion
    matrix nested under their own keys (rows: gold label, columns: predicted)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, matthews_corrcoef, precision_recall_fscore_support

    ids = sorted(id2label)
    if not labels:
        return {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "mcc": 0.0}
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predictions, labels=ids, average="macro",
                                                               zero_division=0)
    per_p, per_r, per_f, support = precision_recall_fscore_support(labels, predictions, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "mcc": float(matthews_corrcoef(labels, predictions)),
        "per_class": {id2label[i]: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for i, p, r, f, s in zip(ids, per_p, per_r, per_f, support)},
        "confusion_matrix": {"labels": [id2label[i] for i in ids],
                             "matrix": confusion_matrix(labels, predictions, labels=ids).tolist()},
    }
