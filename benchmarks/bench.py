"""llmkit against the Hugging Face peers a user would otherwise run, side by side on this machine.

    python benchmarks/bench.py [pretrain|finetune|infer|preprocess|pipeline ...] [--repeats N]   # all by default

Each benchmark alternates peer and llmkit runs (fresh processes) and prints JSON lines: one per run,
then a summary with medians and ratios, which is also appended as a row to benchmarks/RESULTS.md.
A benchmark whose data is not in ../shared/data says so and is skipped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (DATA, MINILM, ROOT, append_result, bert_training_flops, emit, llmkit, machine,  # noqa: E402
                    matmul_peak, median, need, run, run_measured, today)

PEERS = ROOT / "benchmarks" / "peers"
MLM = {"layers": 4, "hidden": 256, "heads": 4, "seq": 128, "batch": 32}


def minilm_dir() -> str:
    from llmkit.paths import resolve_path

    return resolve_path(MINILM)


def pretrain(repeats: int, steps: int = 30, warmup: int = 5) -> dict | None:
    """Masked-LM pretraining of a BERT (4 x 256, 4 heads) from scratch, length 128, batch 32, bf16."""
    text = DATA / "wikitext-2" / "valid.txt"
    if not need(text):
        return None
    work = Path(tempfile.mkdtemp(prefix="llmkit-bench-"))
    config = work / "pretrain.yaml"
    config.write_text(yaml.safe_dump({
        "output_dir": str(work / "mlm"), "seed": 42,
        "model": {"config": {"model_type": "bert", "hidden_size": MLM["hidden"], "num_hidden_layers": MLM["layers"],
                             "num_attention_heads": MLM["heads"], "intermediate_size": 4 * MLM["hidden"]}},
        "tokenizer": {"name_or_path": MINILM},
        "data": {"train_file": str(text), "max_seq_length": MLM["seq"], "validation_split_percentage": 0},
        "pretrain": {"objective": "mlm"},
        "train": {"per_device_train_batch_size": MLM["batch"], "max_steps": steps, "learning_rate": 5e-5,
                  "mixed_precision": "bf16", "logging_steps": 1, "eval_strategy": "no", "save_strategy": "no",
                  "overwrite_output_dir": True},
    }))
    run(llmkit("preprocess", config))  # tokenizing is not what this benchmark times
    peer = [sys.executable, PEERS / "run_mlm_peer.py", "--train-file", text, "--tokenizer", minilm_dir(),
            "--steps", steps, "--layers", MLM["layers"], "--hidden", MLM["hidden"], "--heads", MLM["heads"]]
    contenders = {
        "peer_fp32": lambda: _peer_rate(run(peer)[0], warmup),
        "peer_bf16": lambda: _peer_rate(run([*peer, "--bf16"])[0], warmup),
        "llmkit": lambda: _llmkit_rate(config, work / "mlm", warmup),
    }
    runs = _alternate(contenders, repeats, "pretrain")
    vocab = _vocab_size()
    tokens = MLM["batch"] * MLM["seq"]
    masked = round(0.15 * tokens)
    shape = (MLM["layers"], MLM["hidden"], 4 * MLM["hidden"], vocab, MLM["batch"], MLM["seq"])
    dense, sparse = bert_training_flops(*shape, lm_rows=tokens), bert_training_flops(*shape, lm_rows=masked)
    peak = {"fp32": matmul_peak("float32"), "bf16": matmul_peak("bfloat16")}
    rate = {name: median(r["tokens_per_s"] for r in results) for name, results in runs.items()}
    flops = {"peer_fp32": dense, "peer_bf16": dense, "llmkit": sparse}
    summary = {
        "benchmark": "pretrain", "repeats": repeats, "steps": steps, "model": MLM, "vocab": vocab,
        "tokens_per_s": rate,
        "speedup_vs_peer_bf16": _median_ratio(runs, "llmkit", "peer_bf16", "tokens_per_s"),
        "speedup_vs_peer_fp32": _median_ratio(runs, "llmkit", "peer_fp32", "tokens_per_s"),
        "final_loss": {name: median(r["final_loss"] for r in results) for name, results in runs.items()},
        "matmul_peak_tflops": {k: v / 1e12 for k, v in peak.items()},
        "flops_per_step": {name: flops[name]["train_step"] for name in rate},
        "flops_count": {"dense_lm_head": dense, "sparse_lm_head": sparse},
        "mfu": {name: rate[name] / tokens * flops[name]["train_step"] / peak["fp32" if name == "peer_fp32" else "bf16"]
                for name in rate},
    }
    emit(summary)
    append_result("Pretraining throughput (issue 5): masked LM, BERT 4 x 256, length 128, batch 32",
                  ["date", "machine", "tokens/s peer fp32 / peer bf16 / llmkit", "llmkit vs bf16 peer",
                   "MFU (bf16 peak) peer bf16 / llmkit", "loss after N steps peer bf16 / llmkit", "command"],
                  [today(), machine(), " / ".join(f"{rate[k]:,.0f}" for k in ("peer_fp32", "peer_bf16", "llmkit")),
                   f"**{summary['speedup_vs_peer_bf16']:.2f}x**",
                   f"{summary['mfu']['peer_bf16']:.1%} / {summary['mfu']['llmkit']:.1%}",
                   f"{summary['final_loss']['peer_bf16']:.3f} / {summary['final_loss']['llmkit']:.3f} ({steps})",
                   f"`python benchmarks/bench.py pretrain --repeats {repeats}`"])
    return summary


def _alternate(contenders: dict, repeats: int, name: str) -> dict[str, list[dict]]:
    """A B C A B C ...: drifts in machine load hit every contender alike."""
    runs = {key: [] for key in contenders}
    for repeat in range(repeats):
        for key, measure in contenders.items():
            result = measure()
            runs[key].append(result)
            emit({"benchmark": name, "contender": key, "repeat": repeat, **result})
    return runs


def _median_ratio(runs: dict[str, list[dict]], ours: str, peer: str, key: str) -> float:
    """The median over repeats of each repeat's ratio: a repeat's runs are minutes apart, so a slow
    spell of this shared machine weighs on both sides of a ratio."""
    return median(a[key] / b[key] for a, b in zip(runs[ours], runs[peer], strict=True))


def _peer_rate(result: dict, warmup: int) -> dict:
    seconds = result["step_seconds"][warmup:]
    return {"tokens_per_s": result["tokens_per_step"] / median(seconds),
            "final_loss": sum(result["losses"][-10:]) / len(result["losses"][-10:])}


def _llmkit_rate(config: Path, out: Path, warmup: int) -> dict:
    run(llmkit("pretrain", config))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "tokens_per_s" in line]
    losses = [line["loss"] for line in steps]
    return {"tokens_per_s": median(line["tokens_per_s"] for line in steps[warmup:]),
            "final_loss": sum(losses[-10:]) / len(losses[-10:])}


def _vocab_size() -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(minilm_dir()))


def finetune(repeats: int, rows: int = 4000, seeds: tuple[int, ...] = (42, 43, 44)) -> dict | None:
    """SST-2, MiniLM, 4,000 training rows, 1 epoch: wall time of the whole command, dev accuracy.
    llmkit runs the shipped configs/finetune/sst2.yaml once per seed; the peer (~5 min a run here)
    runs `repeats` times, seeds 42, 43, ... Accuracy is compared as the mean over seeds."""
    sst2 = DATA / "glue" / "SST-2"
    if not need(sst2 / "train.tsv", sst2 / "dev.tsv"):
        return None
    work = Path(tempfile.mkdtemp(prefix="llmkit-bench-"))
    peer_args = [sys.executable, PEERS / "run_glue_peer.py", "--model", minilm_dir(), "--train-file",
                 sst2 / "train.tsv", "--dev-file", sst2 / "dev.tsv", "--rows", rows,
                 "--output-dir", work / "peer"]
    ours = ["finetune", ROOT / "configs" / "finetune" / "sst2.yaml", f"data.data_dir={sst2}",
            f"data.max_train_samples={rows}", "train.num_train_epochs=1", "train.save_strategy=no",
            "train.overwrite_output_dir=true"]

    def peer(seed: int) -> dict:
        result, wall = run([*peer_args, "--seed", seed])
        return {"seed": seed, "wall_s": wall, "train_s": result["train_seconds"], "accuracy": result["accuracy"]}

    def llmkit_run(seed: int) -> dict:
        out = work / f"llmkit-{seed}"
        _, wall = run(llmkit(*ours, f"output_dir={out}", f"seed={seed}"))
        accuracy = json.loads((out / "eval_results.json").read_text())["accuracy"]
        return {"seed": seed, "wall_s": wall, "accuracy": accuracy}

    runs = {"peer": [], "llmkit": []}
    for i, seed in enumerate(seeds):  # interleaved: llmkit, peer, llmkit, (peer), ...
        for key, measure in (("llmkit", llmkit_run), ("peer", peer)):
            if key == "peer" and i >= repeats:
                continue
            runs[key].append(measure(seed))
            emit({"benchmark": "finetune", "contender": key, **runs[key][-1]})
    wall = {key: median(r["wall_s"] for r in results) for key, results in runs.items()}
    accuracy = {key: sum(r["accuracy"] for r in results) / len(results) for key, results in runs.items()}
    summary = {"benchmark": "finetune", "rows": rows, "epochs": 1, "wall_s": wall,
               "speedup": wall["peer"] / wall["llmkit"],
               "mean_accuracy": accuracy, "seeds": {key: [r["seed"] for r in results] for key, results in runs.items()}}
    emit(summary)
    append_result("Fine-tuning wall time (issue 5): SST-2, MiniLM, 4,000 rows, 1 epoch, whole command",
                  ["date", "machine", "wall peer / llmkit", "speedup", "dev accuracy peer / llmkit (mean of seeds)",
                   "command"],
                  [today(), machine(), f"{wall['peer']:.0f} s / {wall['llmkit']:.0f} s",
                   f"**{summary['speedup']:.1f}x**",
                   f"{accuracy['peer']:.3f} ({_seeds(runs['peer'])}) / "
                   f"{accuracy['llmkit']:.3f} ({_seeds(runs['llmkit'])})",
                   f"`python benchmarks/bench.py finetune --repeats {repeats}`"])
    return summary


def _seeds(results: list) -> str:
    return f"{len(results)} seed{'s' if len(results) != 1 else ''}"


def infer(repeats: int, copies: int = 5, rows: int = 4000, limit: int | None = None) -> dict | None:
    """Classification of SST-2 dev (x copies, whole command) by MiniLM fine-tuned by llmkit on `rows` SST-2 rows
    (1 epoch): the pipeline peer; llmkit on torch (bf16, the benchmark's default, and fp32) and on ONNX Runtime
    (its fp32 and int8 exports). Dev accuracy for each llmkit contender. `limit`: dev sentences (a smoke run)."""
    sst2 = DATA / "glue" / "SST-2"
    dev = sst2 / "dev.tsv"
    if not need(sst2 / "train.tsv", dev):
        return None
    work = Path(tempfile.mkdtemp(prefix="llmkit-bench-"))
    model, exports = work / "classifier", {"onnx_fp32": work / "onnx-fp32", "onnx_int8": work / "onnx-int8"}
    run(llmkit("finetune", ROOT / "configs" / "finetune" / "sst2.yaml", f"data.data_dir={sst2}",
               f"data.max_train_samples={rows}", "train.num_train_epochs=1", "train.eval_strategy=no",
               "train.save_strategy=no", f"output_dir={model}"))
    run(llmkit("export", model, "--format", "onnx", "--to", exports["onnx_fp32"]))
    run(llmkit("export", model, "--format", "onnx", "--quantize", "int8", "--to", exports["onnx_int8"]))
    labelled = [line.split("\t") for line in dev.read_text(encoding="utf-8").splitlines()[1:][:limit]]
    gold = [label.strip() for _, label in labelled]
    sentences = [sentence for sentence, _ in labelled] * copies
    texts = work / "sentences.txt"
    texts.write_text("\n".join(sentences) + "\n")
    config = work / "infer.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(model), "model": {"name_or_path": str(model)},
                                      "finetune": {"task": "sequence_classification"},
                                      "train": {"mixed_precision": "bf16"}}))
    peer = [sys.executable, PEERS / "pipeline_peer.py", "--model", model, "--input", texts]

    def rate(command) -> dict:
        result, wall = run(command)
        return {"sentences_per_s": len(sentences) / wall, "wall_s": wall,
                **({"predict_only_sentences_per_s": result["sentences"] / result["seconds"]} if result else {})}

    def ours(name: str, *overrides: str) -> dict:
        out = work / f"{name}.jsonl"
        result = rate(llmkit("infer", config, *overrides, "--input", texts, "--output", out, "--batch-size", 64))
        predicted = [json.loads(line)["label"] for line in out.read_text().splitlines()[:len(gold)]]
        return {**result, "accuracy": sum(p == g for p, g in zip(predicted, gold)) / len(gold)}

    runs = _alternate({"pipeline": lambda: rate(peer),
                       "pipeline_batch64": lambda: rate([*peer, "--batch-size", 64]),
                       "llmkit": lambda: ours("llmkit"),
                       "llmkit_fp32": lambda: ours("llmkit_fp32", "train.mixed_precision=no"),
                       **{name: lambda folder=folder, name=name: ours(name, f"output_dir={folder}",
                                                                      "infer.backend=onnxruntime")
                          for name, folder in exports.items()}}, repeats, "infer")
    speed = {key: median(r["sentences_per_s"] for r in results) for key, results in runs.items()}
    accuracy = {key: median(r["accuracy"] for r in results) for key, results in runs.items()
                if "accuracy" in results[0]}
    summary = {"benchmark": "infer", "sentences": len(sentences), "sentences_per_s": speed, "dev_accuracy": accuracy,
               "speedup_vs_pipeline": _median_ratio(runs, "llmkit", "pipeline", "sentences_per_s"),
               "speedup_vs_pipeline_batch64": _median_ratio(runs, "llmkit", "pipeline_batch64", "sentences_per_s"),
               "onnx_fp32_vs_llmkit_fp32": _median_ratio(runs, "onnx_fp32", "llmkit_fp32", "sentences_per_s"),
               "onnx_int8_vs_llmkit": _median_ratio(runs, "onnx_int8", "llmkit", "sentences_per_s")}
    emit(summary)
    if limit is not None:  # a smoke run's figures are not results
        return summary
    append_result("Inference throughput (issue 5): SST-2 dev x5 (4,360 sentences), MiniLM classifier, whole command",
                  ["date", "machine", "sentences/s pipeline / pipeline(batch_size=64) / llmkit", "vs pipeline",
                   "vs pipeline(batch_size=64)", "command"],
                  [today(), machine(),
                   " / ".join(f"{speed[k]:.0f}" for k in ("pipeline", "pipeline_batch64", "llmkit")),
                   f"**{summary['speedup_vs_pipeline']:.1f}x**", f"{summary['speedup_vs_pipeline_batch64']:.1f}x",
                   f"`python benchmarks/bench.py infer --repeats {repeats}`"])
    contenders = ("llmkit", "llmkit_fp32", "onnx_fp32", "onnx_int8")
    append_result("ONNX Runtime inference (issue 19): SST-2 dev x5, MiniLM fine-tuned on 4,000 rows, whole command",
                  ["date", "machine", "sentences/s torch bf16 / torch fp32 / onnx fp32 / onnx int8",
                   "onnx fp32 vs torch fp32", "onnx int8 vs torch bf16", "dev accuracy (same order)", "command"],
                  [today(), machine(), " / ".join(f"{speed[k]:.0f}" for k in contenders),
                   f"{summary['onnx_fp32_vs_llmkit_fp32']:.2f}x", f"**{summary['onnx_int8_vs_llmkit']:.2f}x**",
                   " / ".join(f"{accuracy[k]:.4f}" for k in contenders),
                   f"`python benchmarks/bench.py infer --repeats {repeats}`"])
    return summary


def preprocess(repeats: int, scale: int = 10) -> dict | None:
    """SOTU (10.7 MB) through `llmkit preprocess` (whole command, cold cache) against the raw fast
    tokenizer's batched throughput on the same lines (tokenizing only); then both, once, on a corpus
    `scale` x larger (each copy's lines made distinct, so deduplication keeps them), with peak memory."""
    sotu = DATA / "sotu" / "sotu_all_docs.txt"
    if not need(sotu):
        return None
    work = Path(tempfile.mkdtemp(prefix="llmkit-bench-"))
    big = work / f"sotu_x{scale}.txt"
    with big.open("w", encoding="utf-8") as f:
        for copy in range(scale):
            for line in sotu.read_text(encoding="utf-8").splitlines():
                f.write(f"copy {copy} : {line}\n")

    def config(text: Path) -> Path:
        path = work / f"{text.stem}.yaml"
        path.write_text(yaml.safe_dump({
            "output_dir": str(work / "unused"), "model": {"config": {"model_type": "bert"}},
            "tokenizer": {"name_or_path": MINILM}, "pretrain": {"objective": "mlm"},
            "data": {"train_file": str(text), "max_seq_length": 128}}))
        return path

    def ours(text: Path, repeat: int) -> dict:
        cache = work / f"cache-{text.stem}-{repeat}"  # cold every time
        _, wall, peak = run_measured(llmkit("preprocess", config(text)), env={"LLMKIT_CACHE_DIR": str(cache)})
        return {"mb_per_s": text.stat().st_size / 1e6 / wall, "wall_s": wall, "peak_rss_mb": peak / 1e6}

    def peer(text: Path) -> dict:
        result, _, peak = run_measured([sys.executable, PEERS / "tokenize_peer.py", "--tokenizer", minilm_dir(),
                                        "--input", text])
        return {"mb_per_s": result["bytes"] / 1e6 / result["seconds"], "tokens": result["tokens"],
                "peak_rss_mb": peak / 1e6}

    repeat = itertools.count()
    runs = _alternate({"tokenizer": lambda: peer(sotu), "llmkit": lambda: ours(sotu, next(repeat))}, repeats,
                      "preprocess")
    scaled = {"tokenizer": peer(big), "llmkit": ours(big, 0)}
    for name, result in scaled.items():
        emit({"benchmark": "preprocess", "contender": f"{name}_x{scale}", **result})
    speed = {key: median(r["mb_per_s"] for r in results) for key, results in runs.items()}
    memory = {"x1": median(r["peak_rss_mb"] for r in runs["llmkit"]), f"x{scale}": scaled["llmkit"]["peak_rss_mb"]}
    summary = {"benchmark": "preprocess", "mb_per_s": speed, "share_of_tokenizer": speed["llmkit"] / speed["tokenizer"],
               f"share_of_tokenizer_x{scale}": scaled["llmkit"]["mb_per_s"] / scaled["tokenizer"]["mb_per_s"],
               "peak_rss_mb": memory, "memory_growth": memory[f"x{scale}"] / memory["x1"]}
    emit(summary)
    append_result("Preprocessing (issue 5): SOTU 10.7 MB and 10x, MiniLM tokenizer, cold cache, whole command",
                  ["date", "machine", "MB/s raw tokenizer (tokenizing only) / llmkit (whole command)",
                   f"share of the tokenizer x1 / x{scale}", f"peak RSS x1 / x{scale} corpus", "command"],
                  [today(), machine(), f"{speed['tokenizer']:.2f} / {speed['llmkit']:.2f}",
                   f"**{summary['share_of_tokenizer']:.0%}** / **{summary[f'share_of_tokenizer_x{scale}']:.0%}**",
                   f"{memory['x1']:.0f} MB / {memory[f'x{scale}']:.0f} MB",
                   f"`python benchmarks/bench.py preprocess --repeats {repeats}`"])
    return summary


def pipeline(repeats: int) -> dict | None:
    """All five stages on configs/tiny/ (the built-in sample), cold cache: wall time of each command."""
    work = Path(tempfile.mkdtemp(prefix="llmkit-bench-"))
    tiny = ROOT / "configs" / "tiny"
    texts = work / "texts.txt"
    texts.write_text("the food was really delicious , we loved it .\nthe service was not friendly .\n")
    totals = []
    for repeat in range(repeats):
        out, env = work / str(repeat), {"LLMKIT_CACHE_DIR": str(work / f"cache-{repeat}")}
        stages = {
            "preprocess": llmkit("preprocess", tiny / "pretrain.yaml"),
            "pretrain": llmkit("pretrain", tiny / "pretrain.yaml", f"output_dir={out / 'mlm'}"),
            "finetune": llmkit("finetune", tiny / "finetune.yaml", f"output_dir={out / 'cls'}",
                               f"model.name_or_path={out / 'mlm'}"),
            "evaluate": llmkit("evaluate", tiny / "finetune.yaml", f"output_dir={out / 'cls'}", "--split", "test"),
            "infer": llmkit("infer", tiny / "finetune.yaml", f"output_dir={out / 'cls'}", "--input", texts),
        }
        seconds = {name: run(command, env=env)[1] for name, command in stages.items()}
        totals.append({"total_s": sum(seconds.values()), **seconds})
        emit({"benchmark": "pipeline", "repeat": repeat, **totals[-1]})
    summary = {"benchmark": "pipeline", **{key: median(t[key] for t in totals) for key in totals[0]}}
    emit(summary)
    append_result("Tiny pipeline (issue 5): the five stages on configs/tiny/, cold cache",
                  ["date", "machine", "total", "preprocess / pretrain / finetune / evaluate / infer", "command"],
                  [today(), machine(), f"**{summary['total_s']:.1f} s**",
                   " / ".join(f"{summary[k]:.1f}" for k in ("preprocess", "pretrain", "finetune", "evaluate", "infer")),
                   f"`python benchmarks/bench.py pipeline --repeats {repeats}`"])
    return summary


BENCHMARKS = {"pipeline": pipeline, "preprocess": preprocess, "infer": infer, "pretrain": pretrain,
              "finetune": finetune}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="benchmark", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each contender (alternated)")
    args = parser.parse_args()
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    for name in args.names or BENCHMARKS:
        BENCHMARKS[name](args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
