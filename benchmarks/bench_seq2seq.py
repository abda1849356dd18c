"""Seq2seq training throughput: llmkit's `finetune.task: seq2seq` against transformers' Seq2SeqTrainer set up as
run_translation.py sets it up (DataCollatorForSeq2Seq with the model, labels padded with -100, AdamW), on the same
model from scratch (multi30k.yaml's), tokenizer, Multi30k pairs, batch and lengths. Each side runs in a fresh
process; the figure is source tokens per second of training (what llmkit's metrics.jsonl logs as tokens_per_s),
after warm-up steps.

    python benchmarks/bench_seq2seq.py                       # Multi30k en->de, the configs/finetune/multi30k.yaml model
    python benchmarks/bench_seq2seq.py --tiny --steps 6      # a smoke run of seconds (d_model 32, 1+1 layers)
    python benchmarks/bench_seq2seq.py --generate RUN_DIR    # translation speed: torch against its ONNX exports

`--generate` takes a trained Multi30k run (`benchmarks/families.py multi30k` prints its run_dir) and translates
test_2016_flickr.en with the whole `llmkit infer` command, greedy, on torch (bf16 as the run's config has it, and
fp32) and on ONNX Runtime (the fp32 and int8 exports, encoder + decoder with past): sentences per second and
sacreBLEU of each.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA, ROOT, append_result, emit, llmkit, machine, median, need, run, today  # noqa: E402

CONFIG = ROOT / "configs" / "finetune" / "multi30k.yaml"
TINY = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64}


def llmkit_run(out: Path, args) -> dict:
    """llmkit's run; its tokenizer and model config are what the peer then reuses."""
    overrides = [f"output_dir={out}", f"train.max_steps={args.steps}", f"train.logging_steps={args.warmup}",
                 "train.eval_strategy=no", "train.save_strategy=no", "train.max_time=null",
                 f"train.per_device_train_batch_size={args.batch}", f"data.max_train_samples={args.samples}",
                 "data.validation_file=null", "data.test_file=null", f"train.mixed_precision={args.precision}"]
    if args.tiny:
        overrides += [f"model.config.{k}={v}" for k, v in TINY.items()] + ["tokenizer.vocab_size=1000"]
    run(llmkit("finetune", CONFIG, *overrides))
    rates = [json.loads(line)["tokens_per_s"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "tokens_per_s" in line][1:]  # the first window holds the warm-up steps
    return {"side": "llmkit", "tokens_per_s": median(rates) if rates else None}


def peer(out: Path, args) -> dict:
    """Seq2SeqTrainer on llmkit's saved tokenizer and model config (fresh weights), as run_translation trains."""
    import torch
    from datasets import Dataset
    from transformers import (AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq,
                              Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback)

    from llmkit.config import load_config
    from llmkit.data.parallel import parallel_paths
    from llmkit.paths import split_file

    cfg = load_config(CONFIG, [f"output_dir={out}"])
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(out))
    source_path, target_path = parallel_paths(cfg.data, split_file(cfg.data, "train"))
    sources = Path(source_path).read_text().splitlines()[:args.samples]
    targets = Path(target_path).read_text().splitlines()[:args.samples]

    def tokenize(batch):
        encoded = tokenizer(batch["source"], max_length=cfg.data.max_seq_length, truncation=True)
        encoded["labels"] = tokenizer(text_target=batch["target"], max_length=cfg.finetune.seq2seq.max_target_length,
                                      truncation=True)["input_ids"]
        return encoded

    data = Dataset.from_dict({"source": sources, "target": targets}).map(tokenize, batched=True,
                                                                         remove_columns=["source", "target"])
    clock = {"tokens": 0, "start": None}

    class Window(TrainerCallback):  # source tokens and time after the warm-up steps
        def on_step_end(self, arguments, state, control, **kwargs):
            if state.global_step == args.warmup:
                clock["start"] = time.perf_counter()

    class Counting(Seq2SeqTrainer):
        def training_step(self, model, inputs, *rest, **kw):
            if clock["start"] is not None:
                clock["tokens"] += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, *rest, **kw)

    training = Seq2SeqTrainingArguments(output_dir=str(out / "peer"), max_steps=args.steps, report_to=[],
                                        per_device_train_batch_size=args.batch, save_strategy="no",
                                        logging_steps=args.warmup, bf16=args.precision == "bf16", use_cpu=True,
                                        learning_rate=cfg.train.learning_rate, seed=cfg.seed)
    trainer = Counting(model=model, args=training, train_dataset=data, processing_class=tokenizer,
                       data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), callbacks=[Window()])
    torch.manual_seed(cfg.seed)
    trainer.train()
    seconds = time.perf_counter() - clock["start"]
    return {"side": "Seq2SeqTrainer", "tokens_per_s": clock["tokens"] / seconds}


def generate(model: Path, repeats: int) -> dict:
    import sacrebleu
    import yaml

    source, reference = DATA / "multi30k" / "test_2016_flickr.en", DATA / "multi30k" / "test_2016_flickr.de"
    if not need(source, reference):
        return {}
    references = reference.read_text().splitlines()
    work = Path(tempfile.mkdtemp(prefix="llmkit-bench-generate-"))
    exports = {"onnx_fp32": work / "onnx-fp32", "onnx_int8": work / "onnx-int8"}
    run(llmkit("export", model, "--format", "onnx", "--to", exports["onnx_fp32"]))
    run(llmkit("export", model, "--format", "onnx", "--quantize", "int8", "--to", exports["onnx_int8"]))
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load((model / "config.yaml").read_text()), "output_dir": str(model)}))
    contenders = {"torch_bf16": [], "torch_fp32": ["train.mixed_precision=no"],
                  **{name: [f"output_dir={folder}", "infer.backend=onnxruntime"] for name, folder in exports.items()}}
    rows = {name: [] for name in contenders}
    for repeat in range(repeats):
        for name, overrides in contenders.items():
            out = work / f"{name}.jsonl"
            _, wall = run(llmkit("infer", config, *overrides, "--input", source, "--output", out, "--batch-size", 64))
            generated = [json.loads(line)["generated"] for line in out.read_text().splitlines()]
            result = {"sentences_per_s": len(generated) / wall,
                      "bleu": sacrebleu.corpus_bleu(generated, [references]).score}
            emit({"benchmark": "seq2seq generation", "contender": name, "repeat": repeat, **result})
            rows[name].append(result)
    speed = {name: median(r["sentences_per_s"] for r in results) for name, results in rows.items()}
    bleu = {name: median(r["bleu"] for r in results) for name, results in rows.items()}
    summary = {"benchmark": "seq2seq generation", "sentences": len(references), "sentences_per_s": speed,
               "bleu": bleu, "onnx_int8_vs_torch_bf16": speed["onnx_int8"] / speed["torch_bf16"]}
    emit(summary)
    append_result("Seq2seq generation on ONNX Runtime (issue 19): Multi30k test_2016_flickr en->de (1,000 sentences), "
                  "greedy, the multi30k.yaml model, whole command",
                  ["date", "machine", "sentences/s torch bf16 / torch fp32 / onnx fp32 / onnx int8",
                   "onnx int8 vs torch bf16", "sacreBLEU (same order)", "command"],
                  [today(), machine(), " / ".join(f"{speed[k]:.0f}" for k in contenders),
                   f"**{summary['onnx_int8_vs_torch_bf16']:.2f}x**", " / ".join(f"{bleu[k]:.1f}" for k in contenders),
                   f"`python benchmarks/bench_seq2seq.py --generate RUN_DIR --repeats {repeats}`"])
    return summary


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=3, help="llmkit and the peer alternate, fresh processes")
    parser.add_argument("--precision", choices=["no", "bf16"], default="bf16")
    parser.add_argument("--tiny", action="store_true", help="a model of seconds, to check the script runs")
    parser.add_argument("--peer-in", help=argparse.SUPPRESS)  # internal: run the peer in this process
    parser.add_argument("--generate", type=Path, metavar="RUN_DIR", help="translation speed of a trained run instead")
    args = parser.parse_args()
    if args.generate:
        generate(args.generate.resolve(), args.repeats)
        return 0
    if args.peer_in:
        emit(peer(Path(args.peer_in), args))
        return 0
    flags = [f"--steps={args.steps}", f"--warmup={args.warmup}", f"--batch={args.batch}", f"--samples={args.samples}",
             f"--precision={args.precision}"]
    rates = {"llmkit": [], "Seq2SeqTrainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            out = Path(tmp) / f"llmkit-{repeat}"
            ours = llmkit_run(out, args)
            theirs, _ = run([sys.executable, __file__, *flags, f"--peer-in={out}"])
            for result in (ours, theirs):
                emit({"benchmark": "seq2seq training", "repeat": repeat, **result})
                rates[result["side"]].append(result["tokens_per_s"])
    speed = {side: median(values) for side, values in rates.items()}
    speedup = speed["llmkit"] / speed["Seq2SeqTrainer"]
    emit({"benchmark": "seq2seq training", "source_tokens_per_s": speed, "speedup": speedup})
    if not args.tiny:  # a smoke run's figures are not results
        append_result("Seq2seq training throughput (issue 18): Multi30k en->de, the multi30k.yaml model, against "
                      "Seq2SeqTrainer (run_translation's set-up)",
                      ["date", "machine", "source tokens/s llmkit / Seq2SeqTrainer", "speedup", "command"],
                      [today(), machine(), f"{speed['llmkit']:.0f} / {speed['Seq2SeqTrainer']:.0f}",
                       f"**{speedup:.2f}x**", f"`python benchmarks/bench_seq2seq.py --repeats {args.repeats} "
                       f"--steps {args.steps} --batch {args.batch} --precision {args.precision}`"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
