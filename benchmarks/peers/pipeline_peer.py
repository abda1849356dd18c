"""The inference peer: `transformers.pipeline("text-classification")` over the sentences of a file.

    python benchmarks/peers/pipeline_peer.py --model DIR --input sentences.txt [--batch-size N]

Prints one JSON line: sentences and seconds spent predicting (model loading excluded).
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()

    from transformers import pipeline

    texts = [line.strip() for line in open(args.input, encoding="utf-8") if line.strip()]
    classify = pipeline("text-classification", model=args.model, device="cpu")
    start = time.perf_counter()
    predictions = classify(texts, batch_size=args.batch_size, truncation=True)
    seconds = time.perf_counter() - start
    print(json.dumps({"sentences": len(predictions), "seconds": seconds}))


if __name__ == "__main__":
    main()
