"""Scores of generated text against one or more references per example, on a 0-100 scale:

    bleu      sacreBLEU's corpus BLEU (13a tokenization, as WMT reports it)
    chrf      sacreBLEU's corpus chrF (character n-gram F-score; kinder to German compounds than BLEU)
    rouge1/2/L  rouge-score's F-measure (stemmed), per example the best reference's, averaged
    gen_len   mean generated words (a run that learns to stop early shows here first)

Examples may have different numbers of references: sacreBLEU wants one stream per reference position, so a
shorter list is padded with its own first reference, which changes neither BLEU's clipped counts and closest
reference length nor chrF's best-reference choice.
"""

from __future__ import annotations

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def generation_metrics(predictions: list[str], references: list[list[str]]) -> dict:
    if not predictions:
        return {}
    return {**sacrebleu_scores(predictions, references), **rouge_scores(predictions, references),
            "gen_len": sum(len(p.split()) for p in predictions) / len(predictions)}


def sacrebleu_scores(predictions: list[str], references: list[list[str]]) -> dict:
    import sacrebleu

    width = max(len(refs) for refs in references)
    streams = [[refs[i] if i < len(refs) else refs[0] for refs in references] for i in range(width)]
    return {"bleu": sacrebleu.corpus_bleu(predictions, streams).score,
            "chrf": sacrebleu.corpus_chrf(predictions, streams).score}


def rouge_scores(predictions: list[str], references: list[list[str]]) -> dict:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, references):
        for name, score in scorer.score_multi(refs, prediction).items():
            totals[name] += score.fmeasure
    return {name: 100 * total / len(predictions) for name, total in totals.items()}
