"""`llmkit infer` at flat memory: the peak resident memory of the whole command, as `/usr/bin/time -v` reports
it, on a 10k-line and a 1M-line text file (the sample's reviews, repeated), with a tiny BERT classifier.

    python benchmarks/infer_memory.py [--lines 10000 1000000]

Prints one JSON line per run and a summary; appends a row to benchmarks/RESULTS.md. The goal: the 1M-line
file within 1.3x of the 10k-line file's peak.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ENV, MINILM, ROOT, append_result, emit, llmkit, machine, today  # noqa: E402


def classifier(work: Path) -> Path:
    """A 2-layer BERT sequence classifier from a config, with MiniLM's WordPiece tokenizer (untrained: the
    memory of predicting does not depend on what the weights are)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from llmkit.paths import resolve_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_path(MINILM))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=256, max_position_embeddings=128, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    folder = work / "classifier"
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def peak_rss(command: list) -> tuple[int, float]:
    """(maximum resident set size in bytes, wall seconds) of a command, by /usr/bin/time -v."""
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", *map(str, command)], cwd=ROOT, env=ENV, capture_output=True,
                            text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    kilobytes = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return kilobytes * 1024, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, nargs=2, default=[10_000, 1_000_000], metavar=("SMALL", "LARGE"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmkit-infer-memory-"))
    model = classifier(work)
    config = work / "infer.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(model), "model": {"name_or_path": str(model)},
                                      "finetune": {"task": "sequence_classification"}}))
    reviews = [line.split("\t")[0] for line in
               (ROOT / "llmkit" / "sample_data" / "sentiment_train.tsv").read_text().splitlines()[1:]]
    peaks = {}
    for lines in args.lines:
        texts = work / f"{lines}.txt"
        with texts.open("w") as f:
            for i in range(lines):
                f.write(reviews[i % len(reviews)] + "\n")
        output = work / f"{lines}.jsonl"
        peak, wall = peak_rss(llmkit("infer", config, "--input", texts, "--output", output))
        written = sum(1 for _ in output.open())
        assert written == lines, (written, lines)
        peaks[lines] = peak
        emit({"lines": lines, "peak_rss_mb": round(peak / 2**20, 1), "wall_s": round(wall, 1),
              "lines_per_s": round(lines / wall)})
    small, large = args.lines
    ratio = peaks[large] / peaks[small]
    emit({"benchmark": "infer_memory", "ratio": round(ratio, 3), "goal": "<= 1.3"})
    append_result("Inference memory (issue 14): peak RSS of `llmkit infer` on a text file, 2-layer BERT classifier",
                  ["date", "machine", "lines", "peak RSS (MB)", "ratio", "command"],
                  [today(), machine(), f"{small:,} / {large:,}",
                   f"{peaks[small] / 2**20:.0f} / {peaks[large] / 2**20:.0f}", f"**{ratio:.2f}x**",
                   "`python benchmarks/infer_memory.py`"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
