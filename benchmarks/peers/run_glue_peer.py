"""The run_glue.py peer: a stock `Trainer` set up as transformers' run_glue.py does by default (every
example padded to max_seq_length=128, batch 32, lr 2e-5), fine-tuning a classifier on SST-2.

    python benchmarks/peers/run_glue_peer.py --model DIR --train-file train.tsv --dev-file dev.tsv --rows 4000

Prints one JSON line: training seconds and dev accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
import time


def read_tsv(path: str, rows: int | None = None) -> dict:
    with open(path, encoding="utf-8") as f:
        records = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:rows]
    return {"sentence": [r["sentence"] for r in records], "label": [int(r["label"]) for r in records]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--train-file", required=True)
    parser.add_argument("--dev-file", required=True)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", default="/tmp/llmkit-bench-peer-glue")
    args = parser.parse_args()

    import numpy as np
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)

    def encode(batch):
        return tokenizer(batch["sentence"], padding="max_length", max_length=128, truncation=True)

    train = Dataset.from_dict(read_tsv(args.train_file, args.rows)).map(encode, batched=True)
    dev = Dataset.from_dict(read_tsv(args.dev_file)).map(encode, batched=True)

    def accuracy(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    training_args = TrainingArguments(output_dir=args.output_dir, per_device_train_batch_size=32,
                                      per_device_eval_batch_size=8, learning_rate=2e-5,
                                      num_train_epochs=args.epochs, use_cpu=True, save_strategy="no", report_to=[],
                                      seed=args.seed, disable_tqdm=True, logging_steps=50)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=dev,
                      compute_metrics=accuracy)
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    print(json.dumps({"train_seconds": train_seconds, "accuracy": trainer.evaluate()["eval_accuracy"]}))


if __name__ == "__main__":
    main()
