"""`llmkit infer CONFIG --input FILE|- [--output preds.jsonl]`: predictions as JSON lines.

    llmkit infer configs/tiny/finetune.yaml --input texts.txt --output preds.jsonl
    echo "the food was [MASK] ." | llmkit infer configs/tiny/pretrain.yaml --input -

One line per input, by task: classification {text, label, score, scores}; regression {text, score};
multi-label {text, labels, scores}; token classification {tokens, tags} (a .txt line is split on
whitespace into words); masked LM {text, predictions} with the top-k fillers of each mask token;
causal LM {text, generated}, the continuation of each text (infer.max_new_tokens, do_sample, ...).
With infer.task `embed`: {text, embedding} (or one .npy array); `zero_shot`: {text, label, score, scores}.
Inputs are batched by length so little compute goes to padding.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llmkit.config import Config
from llmkit.data.batching import pad_inputs
from llmkit.data.files import read_file, require_columns
from llmkit.data.tokenizer import load_tokenizer
from llmkit.embeddings import ZeroShot, embed_texts
from llmkit.errors import LlmkitError
from llmkit.modeling import load_trained
from llmkit.objectives import TASK_HEADS, pad_token_id
from llmkit.stages.common import make_accelerator, trained_model_source
from llmkit.wrappers import PRETRAIN_HEADS


def run(cfg: Config, input_path: str, output_path: str | None, batch_size: int, top_k: int,
        task_name: str | None = None) -> int:
    import torch

    cfg = _task_config(cfg, task_name)
    accelerator = make_accelerator(cfg)
    source = trained_model_source(cfg)
    tokenizer = load_tokenizer(source, "model.name_or_path")
    if cfg.infer.task != "auto":
        return _without_training(cfg, source, tokenizer, accelerator, input_path, output_path, batch_size)
    task = PRETRAIN_HEADS[cfg.pretrain.objective] if cfg.kind == "pretrain" else cfg.finetune.task
    if task == "pretraining":  # NSP / SOP models fill masks with their masked-LM head
        task = "masked_lm"
    examples = _read_inputs(cfg, input_path, words=task == "token_classification")
    model = load_trained(source, task if cfg.kind == "pretrain" else TASK_HEADS[task][0])
    model = model.to(accelerator.device).eval()
    if task == "causal_lm":
        return _write(output_path, [{**e, "generated": _generate(cfg, model, tokenizer, e["text"], accelerator)}
                                    for e in examples])
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    results: list[dict | None] = [None] * len(examples)
    if task == "token_classification":
        encoded = tokenizer([e["tokens"] for e in examples], is_split_into_words=True, truncation=True,
                            max_length=cfg.data.max_seq_length)
    else:
        pairs = [e["text_pair"] for e in examples] if "text_pair" in examples[0] else None
        encoded = tokenizer([e["text"] for e in examples], pairs, truncation=True, max_length=cfg.data.max_seq_length)
    # Batches of (nearly) equal token counts: little compute goes to padding, and a batch without any
    # runs attention without a mask.
    order = sorted(range(len(examples)), key=lambda i: len(encoded["input_ids"][i]))
    columns = [k for k in ("input_ids", "token_type_ids") if k in encoded]
    with torch.no_grad(), accelerator.autocast():
        for start in range(0, len(order), batch_size):
            ids = order[start:start + batch_size]
            padded = pad_inputs({k: [encoded[k][i] for i in ids] for k in columns}, pad_token_id(tokenizer))
            inputs = {k: v.to(accelerator.device) for k, v in padded.items()}
            logits = model(**inputs).logits.float()
            logits = logits[:, -inputs["input_ids"].shape[1]:] if logits.ndim == 3 else logits  # drop virtual tokens
            for row, i in enumerate(ids):
                if task == "masked_lm":
                    prediction = _fill_mask(tokenizer, inputs["input_ids"][row], logits[row], top_k, i)
                elif task == "token_classification":
                    prediction = _tags(encoded.word_ids(i), logits[row].argmax(-1).tolist(), id2label,
                                       len(examples[i]["tokens"]))
                else:
                    prediction = _classify(task, logits[row], id2label, cfg.finetune.threshold)
                results[i] = {**examples[i], **prediction}
    return _write(output_path, results)


def _write(output_path: str | None, results: list[dict]) -> int:
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


def _without_training(cfg: Config, source: str, tokenizer, accelerator, input_path: str, output_path: str | None,
                      batch_size: int) -> int:
    """infer.task `embed` (JSONL, or one .npy array) or `zero_shot`."""
    examples = _read_inputs(cfg, input_path, words=False)
    texts = [e["text"] for e in examples]
    if cfg.infer.task == "zero_shot":
        predictions = ZeroShot(cfg, source, tokenizer, accelerator, batch_size).predict(texts)
        return _write(output_path, [{**e, **p} for e, p in zip(examples, predictions)])
    vectors = embed_texts(cfg, source, tokenizer, texts, accelerator, batch_size)
    if output_path and output_path.endswith(".npy"):
        import numpy as np

        np.save(output_path, vectors.numpy())
        print(f"{len(texts)} embeddings of size {vectors.shape[1]} written to {output_path}", file=sys.stderr)
        return len(texts)
    return _write(output_path, [{**e, "embedding": v} for e, v in zip(examples, vectors.tolist())])


def _generate(cfg: Config, model, tokenizer, prompt: str, accelerator) -> str:
    """The text a causal LM writes after `prompt`, as infer's generation settings say. One prompt at a
    time (no left padding to get right), without special tokens: training streams carry none but eos."""
    import torch
    from accelerate.utils import set_seed

    g = cfg.infer
    set_seed(cfg.seed)  # the same prompt and seed sample the same text
    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(accelerator.device)
    sampling = {"temperature": g.temperature, "top_k": g.top_k, "top_p": g.top_p} if g.do_sample else {}
    with torch.inference_mode(), accelerator.autocast():
        output = model.generate(**inputs, max_new_tokens=g.max_new_tokens, do_sample=g.do_sample, **sampling,
                                pad_token_id=pad_token_id(tokenizer))
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def _task_config(cfg: Config, name: str | None) -> Config:
    """The config of the task to run: a multi-task config's task is picked with --task."""
    configs = cfg.task_configs()
    if name is None and None not in configs:
        raise LlmkitError(f"--task: this config fine-tunes several tasks ({', '.join(configs)}); pick one")
    if name is not None and name not in configs:
        if None in configs:
            raise LlmkitError("--task: this config fine-tunes one task; leave --task out")
        raise LlmkitError(f"--task: no task {name!r} here; the tasks are {', '.join(configs)}")
    return configs[name]


def _classify(task: str, logits, id2label: dict[int, str], threshold: float) -> dict:
    if task == "regression":
        return {"score": logits[0].item()}
    if task == "multi_label_classification":
        probabilities = logits.sigmoid().tolist()
        return {"labels": [id2label[i] for i, p in enumerate(probabilities) if p > threshold],
                "scores": {id2label[i]: p for i, p in enumerate(probabilities)}}
    probabilities = logits.softmax(-1).tolist()
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return {"label": id2label[best], "score": probabilities[best],
            "scores": {id2label[i]: p for i, p in enumerate(probabilities)}}


def _tags(word_ids: list, predicted: list[int], id2label: dict[int, str], num_words: int) -> dict:
    """A tag per word from its first sub-token; `O` for a word with none (dropped or truncated)."""
    tags = ["O"] * num_words
    seen = set()
    for position, word in enumerate(word_ids):
        if word is not None and word not in seen:
            seen.add(word)
            tags[word] = id2label[predicted[position]]
    return {"tags": tags}


def _fill_mask(tokenizer, input_ids, logits, top_k: int, index: int) -> dict:
    positions = (input_ids == tokenizer.mask_token_id).nonzero().flatten().tolist()
    if not positions:
        raise LlmkitError(f"--input: row {index + 1} has no {tokenizer.mask_token} token to fill")
    predictions = []
    for position in positions:
        scores, token_ids = logits[position].softmax(-1).topk(top_k)
        predictions.append([{"token": tokenizer.decode([t]).strip(), "token_id": t, "score": s}
                            for s, t in zip(scores.tolist(), token_ids.tolist())])
    return {"predictions": predictions}


def _read_inputs(cfg: Config, input_path: str, words: bool) -> list[dict]:
    """Examples from the lines of stdin / a .txt file, or from the columns of any data file."""
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
        lines = [line.strip() for line in lines if line.strip()]
        if not words and cfg.finetune is not None and cfg.data.text_pair_column:
            raise LlmkitError(f"--input: this model reads text pairs ({cfg.data.text_column}, "
                              f"{cfg.data.text_pair_column}); give a .jsonl/.csv/.tsv file with those columns")
        examples = [{"tokens": line.split()} if words else {"text": line} for line in lines]
    else:
        dataset = read_file(input_path, "--input")
        if words:
            require_columns(dataset, [cfg.data.tokens_column], input_path, "--input")
            examples = [{"tokens": list(t)} for t in dataset[cfg.data.tokens_column]]
        else:
            pair = cfg.data.text_pair_column if cfg.finetune is not None else None
            require_columns(dataset, [cfg.data.text_column] + ([pair] if pair else []), input_path, "--input")
            texts = [str(t) for t in dataset[cfg.data.text_column]]
            examples = ([{"text": t, "text_pair": str(p)} for t, p in zip(texts, dataset[pair])] if pair
                        else [{"text": t} for t in texts])
    if not examples:
        raise LlmkitError(f"--input: {input_path} holds no text")
    return examples
