"""`llmkit infer CONFIG --input FILE|- [--output preds.jsonl]`: predictions as JSON lines.

    llmkit infer configs/tiny/finetune.yaml --input texts.txt --output preds.jsonl
    echo "the food was [MASK] ." | llmkit infer configs/tiny/pretrain.yaml --input -

A classifier writes {text, label, score, scores} per input; a masked LM writes, for each mask token
in the text, its top-k fillers. Inputs are batched by length so little compute goes to padding.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llmkit.config import Config
from llmkit.data.files import read_file, require_columns
from llmkit.data.tokenizer import load_tokenizer
from llmkit.errors import LlmkitError
from llmkit.modeling import load_trained
from llmkit.stages.common import make_accelerator, trained_model_source


def run(cfg: Config, input_path: str, output_path: str | None, batch_size: int, top_k: int) -> int:
    import torch

    accelerator = make_accelerator(cfg)
    source = trained_model_source(cfg)
    tokenizer = load_tokenizer(source, "model.name_or_path")
    texts, pairs = _read_inputs(cfg, input_path)
    head = "masked_lm" if cfg.kind == "pretrain" else "sequence_classification"
    model = load_trained(source, head).to(accelerator.device).eval()
    predict = _fill_mask if head == "masked_lm" else _classify
    results: list[dict | None] = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + len(pairs[i] or ""))
    with torch.no_grad(), accelerator.autocast():
        for start in range(0, len(order), batch_size):
            ids = order[start:start + batch_size]
            batch_pairs = [pairs[i] for i in ids] if pairs[ids[0]] is not None else None
            encoded = tokenizer([texts[i] for i in ids], batch_pairs, truncation=True,
                                max_length=cfg.data.max_seq_length, padding=True, return_tensors="pt")
            encoded = {k: v.to(accelerator.device) for k, v in encoded.items()}
            logits = model(**encoded).logits.float()
            for row, i in enumerate(ids):
                results[i] = {"text": texts[i], **({"text_pair": pairs[i]} if pairs[i] is not None else {}),
                              **predict(model, tokenizer, encoded, logits, row, top_k, i)}
    out = open(output_path, "w", encoding="utf-8") if output_path and output_path != "-" else sys.stdout
    try:
        for result in results:
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if output_path and output_path != "-":
        print(f"{len(results)} predictions written to {output_path}", file=sys.stderr)
    return len(results)


def _classify(model, tokenizer, encoded, logits, row, top_k, index) -> dict:
    probabilities = logits[row].softmax(-1).tolist()
    id2label = model.config.id2label
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return {"label": id2label[best], "score": probabilities[best],
            "scores": {id2label[i]: p for i, p in enumerate(probabilities)}}


def _fill_mask(model, tokenizer, encoded, logits, row, top_k, index) -> dict:
    positions = (encoded["input_ids"][row] == tokenizer.mask_token_id).nonzero().flatten().tolist()
    if not positions:
        raise LlmkitError(f"--input: row {index + 1} has no {tokenizer.mask_token} token to fill")
    predictions = []
    for position in positions:
        scores, token_ids = logits[row, position].softmax(-1).topk(top_k)
        predictions.append([{"token": tokenizer.decode([t]).strip(), "token_id": t, "score": s}
                            for s, t in zip(scores.tolist(), token_ids.tolist())])
    return {"predictions": predictions}


def _read_inputs(cfg: Config, input_path: str) -> tuple[list[str], list[str | None]]:
    """Texts (and second texts for pair tasks): lines of stdin / a .txt file, or columns of a table."""
    if input_path == "-" or Path(input_path).suffix.lower() in (".txt", ".text"):
        if input_path == "-":
            lines = sys.stdin.read().splitlines()
        else:
            if not Path(input_path).is_file():
                raise LlmkitError(f"--input: file not found: {input_path}")
            try:
                lines = Path(input_path).read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise LlmkitError(f"--input: {input_path} is not UTF-8 text: {e}") from None
        texts = [line.strip() for line in lines if line.strip()]
        if cfg.data.text_pair_column:
            raise LlmkitError(f"--input: this model reads text pairs ({cfg.data.text_column}, "
                              f"{cfg.data.text_pair_column}); give a .jsonl/.csv/.tsv file with those columns")
        pairs = [None] * len(texts)
    else:
        dataset = read_file(input_path, "--input")
        columns = [cfg.data.text_column] + ([cfg.data.text_pair_column] if cfg.data.text_pair_column else [])
        require_columns(dataset, columns, input_path, "--input")
        texts = [str(t) for t in dataset[cfg.data.text_column]]
        pairs = [str(p) for p in dataset[cfg.data.text_pair_column]] if cfg.data.text_pair_column else [None] * len(texts)
    if not texts:
        raise LlmkitError(f"--input: {input_path} holds no text")
    return texts, pairs
