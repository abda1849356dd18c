"""The preprocessing peer: the raw fast tokenizer, batched, over every line of a text file (no packing,
no caching), the most a tokenizing pipeline can go.

    python benchmarks/peers/tokenize_peer.py --tokenizer DIR --input corpus.txt

Prints one JSON line: bytes, tokens and seconds spent tokenizing (reading the file excluded).
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    lines = [line for line in open(args.input, encoding="utf-8").read().splitlines() if line.strip()]
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(lines), args.batch_size):
        tokens += sum(map(len, tokenizer(lines[i:i + args.batch_size])["input_ids"]))
    seconds = time.perf_counter() - start
    print(json.dumps({"bytes": sum(len(line.encode()) for line in lines), "tokens": tokens, "seconds": seconds}))


if __name__ == "__main__":
    main()
