"""The figures of the task families (issue 18) on the real data in ../shared/data, each its shipped config run as a
user runs it: train, then the scores of eval_results.json / test_results.json. A JSON line per figure, and a row
per figure in benchmarks/RESULTS.md.

    python benchmarks/families.py [xquad|cosmosqa|multi30k ...]      # all by default
    python benchmarks/families.py xquad --floor                      # also the head-only (frozen encoder) floor
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA, ROOT, append_result, emit, llmkit, machine, need, run, today  # noqa: E402

CONFIGS = ROOT / "configs" / "finetune"


def _train(config: str, out: Path, *overrides: str) -> tuple[dict, float]:
    """Fine-tune with a shipped config; its final evaluation (eval_results.json) and wall time."""
    _, wall = run(llmkit("finetune", CONFIGS / config, f"output_dir={out}", f"data.data_dir={DATA / out.parent.name}",
                         *overrides))
    return json.loads((out / "eval_results.json").read_text()), wall


def _work(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix="llmkit-families-")) / name / "run"


def xquad(floor: bool) -> dict | None:
    """MiniLM on XQuAD-en, 38 articles trained, 10 held out (seeded by article); with `floor`, the same with the
    encoder frozen (the head alone learns)."""
    if not need(DATA / "xquad" / "xquad.en.json"):
        return None
    out = _work("xquad")
    results, wall = _train("xquad.yaml", out)
    summary = {"figure": "xquad", "exact_match": results["exact_match"], "f1": results["f1"],
               "questions": results.get("num_questions"), "minutes": wall / 60}
    if floor:
        frozen, _ = _train("xquad.yaml", out.parent / "frozen", "finetune.method=freeze")
        summary |= {"floor_exact_match": frozen["exact_match"], "floor_f1": frozen["f1"]}
    emit(summary)
    floor_cell = (f"{summary['floor_exact_match']:.1f} / {summary['floor_f1']:.1f}" if floor else "not run")
    append_result("XQuAD-en question answering (issue 18): MiniLM, 38 articles trained, 10 held out (seed 42)",
                  ["date", "machine", "held-out questions", "EM / F1", "head only (frozen encoder) EM / F1",
                   "wall", "command"],
                  [today(), machine(), summary["questions"], f"**{results['exact_match']:.1f} / {results['f1']:.1f}**",
                   floor_cell, f"{summary['minutes']:.1f} min",
                   "`python benchmarks/families.py xquad" + (" --floor`" if floor else "`")])
    return summary


def cosmosqa() -> dict | None:
    """MiniLM on Cosmos QA, a fixed 80/20 split of valid.csv (stratified, seed 42); chance is 0.25."""
    if not need(DATA / "cosmosqa" / "valid.csv"):
        return None
    results, wall = _train("cosmosqa.yaml", _work("cosmosqa"))
    summary = {"figure": "cosmosqa", "accuracy": results["accuracy"], "examples": results["num_examples"],
               "minutes": wall / 60}
    emit(summary)
    append_result("Cosmos QA multiple choice (issue 18): MiniLM, 80/20 split of valid.csv (seed 42), chance 0.25",
                  ["date", "machine", "held-out rows", "accuracy", "wall", "command"],
                  [today(), machine(), results["num_examples"], f"**{results['accuracy']:.4f}**",
                   f"{summary['minutes']:.1f} min", "`python benchmarks/families.py cosmosqa`"])
    return summary


def multi30k() -> dict | None:
    """A T5 from scratch on Multi30k en->de for train.max_time (30 minutes), then sacreBLEU on test_2016_flickr;
    the curve is validation BLEU at each epoch's evaluation against the training minutes."""
    if not need(DATA / "multi30k" / "train.en", DATA / "multi30k" / "test_2016_flickr.de"):
        return None
    out = _work("multi30k")
    # BLEU at each epoch's evaluation on 300 validation pairs: the curve, at a few seconds of generation each
    _, wall = _train("multi30k.yaml", out, "data.max_eval_samples=300")
    run(llmkit("evaluate", CONFIGS / "multi30k.yaml", f"output_dir={out}", f"data.data_dir={DATA / 'multi30k'}",
               "data.max_eval_samples=null", "--split", "test"))
    test = json.loads((out / "test_results.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    state = json.loads((out / "trainer_state.json").read_text())
    minutes_per_step = state["train_seconds"] / 60 / state["global_step"]  # the loop's clock, evaluations in it
    curve = [(row["step"] * minutes_per_step, row["eval_bleu"]) for row in rows if "eval_bleu" in row]
    summary = {"figure": "multi30k", "test_bleu": test["bleu"], "test_chrf": test["chrf"], "curve": curve,
               "minutes": wall / 60}
    emit(summary)
    append_result("Multi30k en->de translation (issue 18): a T5 from scratch (256d, 3+3 layers), 30 min of training",
                  ["date", "machine", "test_2016_flickr sacreBLEU / chrF", "validation BLEU over training minutes",
                   "wall (with evaluations)", "command"],
                  [today(), machine(), f"**{test['bleu']:.1f}** / {test['chrf']:.1f}",
                   ", ".join(f"{m:.0f}m {b:.1f}" for m, b in curve), f"{summary['minutes']:.1f} min",
                   "`python benchmarks/families.py multi30k`"])
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figures", nargs="*", help="xquad, cosmosqa, multi30k (default: all)")
    parser.add_argument("--floor", action="store_true", help="xquad: also the frozen-encoder floor")
    args = parser.parse_args()
    figures = {"xquad": lambda: xquad(args.floor), "cosmosqa": cosmosqa, "multi30k": multi30k}
    unknown = [name for name in args.figures if name not in figures]
    if unknown:
        parser.error(f"unknown figure {unknown[0]!r}; choose from {', '.join(figures)}")
    for name in args.figures or figures:
        figures[name]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
