"""The figures of the task families (issue 18) on the real data in ../shared/data, each its shipped config run as a
user runs it: train, then the scores of eval_results.json / test_results.json. A JSON line per figure, and a row
per figure in benchmarks/RESULTS.md.

    python benchmarks/families.py [xquad|cosmosqa|multi30k|scitldr|span ...]   # all by default
    python benchmarks/families.py xquad --floor                      # also the head-only (frozen encoder) floor
    python benchmarks/families.py span --minutes 16                  # the training time each side of span gets
    python benchmarks/families.py scitldr --epochs 1 --beams 1       # shorter: one epoch, greedy only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA, ROOT, append_result, emit, llmkit, machine, need, run, today  # noqa: E402

CONFIGS = ROOT / "configs" / "finetune"
SPAN_CONFIG = ROOT / "configs" / "pretrain" / "span_corruption.yaml"


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
    """The shipped BART-style model from scratch on Multi30k en->de for train.max_time (30 minutes), then sacreBLEU
    on test_2016_flickr;
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
               "minutes": wall / 60, "run_dir": str(out)}
    emit(summary)
    append_result("Multi30k en->de translation (issue 18): the shipped BART-style model from scratch (256d, 3+3 "
                  "layers), 30 min of training",
                  ["date", "machine", "test_2016_flickr sacreBLEU / chrF", "validation BLEU over training minutes",
                   "wall (with evaluations)", "command"],
                  [today(), machine(), f"**{test['bleu']:.1f}** / {test['chrf']:.1f}",
                   ", ".join(f"{m:.0f}m {b:.1f}" for m, b in curve), f"{summary['minutes']:.1f} min",
                   "`python benchmarks/families.py multi30k`"])
    return summary


def scitldr(epochs: int | None, beams: list[int]) -> dict | None:
    """BERT2BERT warm-started from MiniLM on SciTLDR-A (the shipped config; `epochs` instead of its 5 when given),
    ROUGE-1/2/L on the test split against every reference TL;DR with each of `beams` (1: greedy); the floor is
    the lead sentence (the abstract's first)."""
    from llmkit.objectives.generation_metrics import rouge_scores

    if not need(DATA / "scitldr" / "test.jsonl"):
        return None
    out = _work("scitldr")
    _, wall = _train("scitldr.yaml", out, *([f"train.num_train_epochs={epochs}"] if epochs else []))
    scores = {}
    for width in beams:
        run(llmkit("evaluate", CONFIGS / "scitldr.yaml", f"output_dir={out}", f"data.data_dir={DATA / 'scitldr'}",
                   f"finetune.seq2seq.num_beams={width}", "--split", "test"))
        scores[width] = json.loads((out / "test_results.json").read_text())
    rows = [json.loads(line) for line in (DATA / "scitldr" / "test.jsonl").read_text().splitlines() if line.strip()]
    lead = rouge_scores([row["source"][0] for row in rows], [row["target"] for row in rows])
    epochs = epochs or yaml.safe_load((CONFIGS / "scitldr.yaml").read_text())["train"]["num_train_epochs"]
    summary = {"figure": "scitldr", "lead": lead, "epochs": epochs, "minutes": wall / 60,
               **{f"beams{width}": {k: r[k] for k in ("rouge1", "rouge2", "rougeL")} for width, r in scores.items()}}
    emit(summary)

    def cell(r: dict) -> str:
        return f"{r['rouge1']:.1f} / {r['rouge2']:.1f} / {r['rougeL']:.1f}"

    searches = ", ".join(f"{'greedy' if width == 1 else f'{width} beams'} {cell(r)}" for width, r in scores.items())
    append_result("SciTLDR-A summarization (issue 18): BERT2BERT warm-started from MiniLM, test split, all references",
                  ["date", "machine", "epochs", "test ROUGE-1/2/L", "lead sentence", "wall (training, evaluations)",
                   "command"],
                  [today(), machine(), epochs, f"**{searches}**", cell(lead),
                   f"{summary['minutes']:.1f} min",
                   f"`python benchmarks/families.py scitldr --epochs {epochs} --beams "
                   f"{' '.join(map(str, beams))}`"])
    return summary


def span(minutes: float) -> dict | None:
    """Span corruption, then translation, against translation alone, at equal training time: the span-corruption
    T5 (configs/pretrain/span_corruption.yaml) pretrained on both sides of Multi30k's training set for half of
    `minutes`, then fine-tuned en->de for the other half; the same T5 and tokenizer from random initialisation
    fine-tuned for all of `minutes`. Each schedule is planned to end in its time (steps from a short timed run);
    test sacreBLEU of each, evaluation not counted."""
    m30k = DATA / "multi30k"
    if not need(m30k / "train.en", m30k / "train.de"):
        return None
    root = _work("span").parent
    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    (corpus / "train.txt").write_text((m30k / "train.en").read_text() + (m30k / "train.de").read_text())
    (corpus / "test.txt").write_text((m30k / "test_2016_flickr.en").read_text())
    pretrained = root / "pretrained"
    pretrain = [SPAN_CONFIG, f"data.data_dir={corpus}", "data.train_file=train.txt", "data.test_file=test.txt",
                "train.eval_strategy=no", "train.save_strategy=no"]
    steps = _steps_in(minutes / 2, "pretrain", *pretrain, out=root / "timing-pretrain")
    run(llmkit("pretrain", *pretrain, f"output_dir={pretrained}", f"train.max_steps={steps}",
               f"train.max_time={minutes / 2 + 1:g}m"))
    t5 = yaml.safe_load(SPAN_CONFIG.read_text())["model"]["config"]
    sides = {"span corruption, then translation": ("from-pretrained", {"name_or_path": str(pretrained)}, minutes / 2),
             "translation from random initialisation": ("from-scratch", {"config": t5}, minutes)}
    results = {}
    for name, (folder, model, budget) in sides.items():
        cfg = yaml.safe_load((CONFIGS / "multi30k.yaml").read_text())
        cfg["model"], cfg["tokenizer"] = model, {"name_or_path": str(pretrained)}  # one tokenizer, with sentinels
        cfg["train"] |= {"eval_strategy": "no", "save_strategy": "no"}
        path = root / f"{folder}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        common = [path, f"data.data_dir={m30k}", "data.max_eval_samples=300"]
        steps = _steps_in(budget, "finetune", *common, out=root / f"timing-{folder}")
        out = root / folder
        run(llmkit("finetune", *common, f"output_dir={out}", f"train.max_steps={steps}",
                   f"train.max_time={budget + 1:g}m"))
        run(llmkit("evaluate", *common, f"output_dir={out}", "data.max_eval_samples=null", "--split", "test"))
        state = json.loads((out / "trainer_state.json").read_text())
        results[name] = {"test_bleu": json.loads((out / "test_results.json").read_text())["bleu"],
                         "train_minutes": state["train_seconds"] / 60, "steps": state["global_step"]}
    pretrain_minutes = json.loads((pretrained / "trainer_state.json").read_text())["train_seconds"] / 60
    results["span corruption, then translation"]["pretrain_minutes"] = pretrain_minutes
    emit({"figure": "span", "minutes": minutes, **results})
    ours, scratch = results["span corruption, then translation"], results["translation from random initialisation"]
    append_result("Span corruption then translation, against translation alone (issue 18): the span-corruption T5 "
                  "(256d, 4+4 layers) on Multi30k, equal training time, test_2016_flickr sacreBLEU",
                  ["date", "machine", "pretrained + fine-tuned: minutes, BLEU", "from random init: minutes, BLEU",
                   "command"],
                  [today(), machine(),
                   f"{pretrain_minutes:.1f} + {ours['train_minutes']:.1f}, **{ours['test_bleu']:.1f}**",
                   f"{scratch['train_minutes']:.1f}, **{scratch['test_bleu']:.1f}**",
                   f"`python benchmarks/families.py span --minutes {minutes:g}`"])
    return results


def _steps_in(minutes: float, command: str, *args, out: Path, probe: int = 30) -> int:
    """The steps a run of `command` takes in `minutes` of training, from the seconds per step of a `probe`-step
    run (its first steps' overhead included, so the estimate errs short)."""
    run(llmkit(command, *args, f"output_dir={out}", f"train.max_steps={probe}", "train.max_time=null"))
    seconds = json.loads((out / "trainer_state.json").read_text())["train_seconds"] / probe
    return max(probe, int(minutes * 60 / seconds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figures", nargs="*", help="xquad, cosmosqa, multi30k, scitldr, span (default: all)")
    parser.add_argument("--floor", action="store_true", help="xquad: also the frozen-encoder floor")
    parser.add_argument("--minutes", type=float, default=16, help="span: the training minutes of each side")
    parser.add_argument("--epochs", type=int, help="scitldr: epochs instead of the config's")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4], help="scitldr: the searches scored on test")
    args = parser.parse_args()
    figures = {"xquad": lambda: xquad(args.floor), "cosmosqa": cosmosqa, "multi30k": multi30k,
               "scitldr": lambda: scitldr(args.epochs, args.beams), "span": lambda: span(args.minutes)}
    unknown = [name for name in args.figures if name not in figures]
    if unknown:
        parser.error(f"unknown figure {unknown[0]!r}; choose from {', '.join(figures)}")
    for name in args.figures or figures:
        figures[name]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
