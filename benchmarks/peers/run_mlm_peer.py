"""The run_mlm.py peer: a stock `Trainer` set up as transformers' run_mlm.py does by default (tokenize
every line, concatenate, cut into blocks, `DataCollatorForLanguageModeling`), BERT from scratch.

    python benchmarks/peers/run_mlm_peer.py --train-file valid.txt --tokenizer DIR --steps 30 [--bf16]

Prints one JSON line: per-step wall times (after warmup), tokens per step, the losses.
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import chain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-file", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--output-dir", default="/tmp/llmkit-bench-peer-mlm")
    args = parser.parse_args()

    from datasets import load_dataset
    from transformers import (AutoTokenizer, BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer,
                              TrainerCallback, TrainingArguments, set_seed)

    set_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    raw = load_dataset("text", data_files={"train": args.train_file})["train"]
    tokenized = raw.map(lambda b: tokenizer(b["text"], return_special_tokens_mask=True), batched=True,
                        remove_columns=["text"])

    def group_texts(examples):
        joined = {k: list(chain(*examples[k])) for k in examples}
        total = len(joined["input_ids"]) // args.block_size * args.block_size
        return {k: [t[i:i + args.block_size] for i in range(0, total, args.block_size)] for k, t in joined.items()}

    blocks = tokenized.map(group_texts, batched=True)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.heads, intermediate_size=4 * args.hidden)
    model = BertForMaskedLM(config)

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter())

    timer = StepTimes()
    training_args = TrainingArguments(output_dir=args.output_dir, per_device_train_batch_size=args.batch_size,
                                      max_steps=args.steps, bf16=args.bf16, use_cpu=True, logging_steps=1,
                                      save_strategy="no", report_to=[], seed=42, disable_tqdm=True)
    trainer = Trainer(model=model, args=training_args, train_dataset=blocks, callbacks=[timer],
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15))
    start = time.perf_counter()
    trainer.train()
    steps = [b - a for a, b in zip([start] + timer.times[:-1], timer.times)]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(json.dumps({"step_seconds": steps, "tokens_per_step": args.batch_size * args.block_size,
                      "losses": losses, "blocks": len(blocks)}))


if __name__ == "__main__":
    main()
