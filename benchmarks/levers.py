"""What each CPU lever of llmkit's pretraining step is worth, toggled in one process, interleaved.

    python benchmarks/levers.py [--rounds N]

The step is the pretrain benchmark's (BERT 4 x 256, 4 heads, 32 x 128 tokens, bf16 autocast, the LM
head on masked rows only, fused AdamW) on random tokens. Toggled: train.fast_dropout (llmkit.cpu) and
glibc keeping freed memory, which cannot be undone in a process, so each setting of it gets its own
subprocess. Prints a JSON line per setting (median step seconds over the rounds), then each lever's share
against the step with all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(keep_memory: bool, rounds: int) -> list[dict]:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from llmkit.objectives import losses
    from llmkit.cpu import FastDropout, keep_freed_memory

    if keep_memory:
        keep_freed_memory()
    torch.manual_seed(0)
    config = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    model = losses.MaskedLMLoss(BertForMaskedLM(config)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    input_ids = torch.randint(1000, config.vocab_size, (32, 128))
    labels = torch.where(torch.rand(32, 128) < 0.15, input_ids, -100)

    def step(fast_dropout: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16), FastDropout() if fast_dropout else contextlib.nullcontext():
            loss = model(labels=labels, input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    times = {fast_dropout: [] for fast_dropout in (False, True)}
    for round_ in range(rounds + 1):  # round 0 warms up
        for fast_dropout in times:
            seconds = [step(fast_dropout) for _ in range(3)]
            if round_:
                times[fast_dropout] += seconds
    return [{"keep_freed_memory": keep_memory, "fast_dropout": fast_dropout,
             "step_s": round(statistics.median(t), 4)} for fast_dropout, t in times.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds of 3 steps per setting (after a warm-up)")
    parser.add_argument("--keep-memory", choices=["yes", "no"], help=argparse.SUPPRESS)  # one subprocess's part
    args = parser.parse_args()
    if args.keep_memory:
        for record in measure(args.keep_memory == "yes", args.rounds):
            print(json.dumps(record), flush=True)
        return 0
    records = []
    for keep in ("no", "yes"):
        out = subprocess.run([sys.executable, __file__, "--rounds", str(args.rounds), "--keep-memory", keep],
                             cwd=ROOT, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        records += [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    for record in records:
        print(json.dumps(record))
    step = {(r["keep_freed_memory"], r["fast_dropout"]): r["step_s"] for r in records}
    best = step[True, True]
    print(json.dumps({"all_levers_step_s": best, "none_step_s": step[False, False],
                      "speedup_all_vs_none": round(step[False, False] / best, 3),
                      "step_without": {"fast_dropout": step[True, False], "keep_freed_memory": step[False, True]}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
