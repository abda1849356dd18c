"""Evaluation metrics, computed by scikit-learn, scipy and seqeval (never by hand)."""

from __future__ import annotations


def classification_metrics(labels, predictions, id2label: dict[int, str], positive: int | None = None) -> dict:
    """accuracy, macro precision/recall/F1, Matthews correlation, and with a `positive` class (two-class tasks)
    its F1 (`f1_binary`); per-class scores and the confusion matrix nested under their own keys (rows: gold
    label, columns: predicted)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, matthews_corrcoef, precision_recall_fscore_support

    ids = sorted(id2label)
    if not labels:
        return {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "mcc": 0.0,
                **({"f1_binary": 0.0} if positive is not None else {})}
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predictions, labels=ids, average="macro",
                                                               zero_division=0)
    per_p, per_r, per_f, support = precision_recall_fscore_support(labels, predictions, labels=ids, zero_division=0)
    binary = {} if positive is None else {"f1_binary": float(per_f[ids.index(positive)])}  # the positive class's F1
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        **classification_micro(labels, predictions, ids),
        "mcc": float(matthews_corrcoef(labels, predictions)),
        **binary,
        "per_class": {id2label[i]: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for i, p, r, f, s in zip(ids, per_p, per_r, per_f, support)},
        "confusion_matrix": {"labels": [id2label[i] for i in ids],
                             "matrix": confusion_matrix(labels, predictions, labels=ids).tolist()},
    }


def classification_micro(labels, predictions, ids) -> dict:
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, _ = precision_recall_fscore_support(labels, predictions, labels=ids, average="micro", zero_division=0)
    return {"precision_micro": float(p), "recall_micro": float(r), "f1_micro": float(f)}


def regression_metrics(labels, predictions) -> dict:
    """Pearson and Spearman correlation (scipy) and mean squared error."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr

    if len(labels) < 2:
        return {"pearson": 0.0, "spearman": 0.0, "mse": 0.0}
    labels, predictions = np.asarray(labels, dtype=float), np.asarray(predictions, dtype=float)
    return {"pearson": float(pearsonr(predictions, labels)[0]), "spearman": float(spearmanr(predictions, labels)[0]),
            "mse": float(((predictions - labels) ** 2).mean())}


def multilabel_metrics(labels, predictions, id2label: dict[int, str]) -> dict:
    """Exact-match accuracy; macro and micro precision/recall/F1 over labels; per-label scores."""
    import numpy as np
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    if not labels:
        return {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    y, p = np.asarray(labels), np.asarray(predictions)
    macro = precision_recall_fscore_support(y, p, average="macro", zero_division=0)
    micro = precision_recall_fscore_support(y, p, average="micro", zero_division=0)
    per = precision_recall_fscore_support(y, p, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y, p)), "precision": float(macro[0]), "recall": float(macro[1]),
        "f1": float(macro[2]), "precision_micro": float(micro[0]), "recall_micro": float(micro[1]),
        "f1_micro": float(micro[2]),
        "per_class": {id2label[i]: {"precision": float(per[0][i]), "recall": float(per[1][i]), "f1": float(per[2][i]),
                                    "support": int(per[3][i])} for i in sorted(id2label)},
    }


def entity_metrics(labels: list[list[str]], predictions: list[list[str]], strict_scheme: str | None = None) -> dict:
    """Entity-level micro precision/recall/F1 (seqeval: CoNLL rules, or `strict_scheme`'s, e.g. BIOES), token
    accuracy, per entity type."""
    import seqeval.scheme
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    if not labels:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}
    rules = {"mode": "strict", "scheme": getattr(seqeval.scheme, strict_scheme)} if strict_scheme else {}
    report = classification_report(labels, predictions, output_dict=True, zero_division=0, **rules)
    return {
        "precision": float(precision_score(labels, predictions, zero_division=0, **rules)),
        "recall": float(recall_score(labels, predictions, zero_division=0, **rules)),
        "f1": float(f1_score(labels, predictions, zero_division=0, **rules)),
        "accuracy": float(accuracy_score(labels, predictions)),
        "per_class": {name: {"precision": float(v["precision"]), "recall": float(v["recall"]),
                             "f1": float(v["f1-score"]), "support": int(v["support"])}
                      for name, v in report.items() if not name.endswith(" avg")},
    }
