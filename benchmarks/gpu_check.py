"""The one thing to run when a GPU machine is at hand (issue 19, point 5): a JSON of what llmkit does on it.

    bash scripts/gpu_check.sh [--out gpu_check.json]      # or: python -m benchmarks.gpu_check --out ...

On a GPU (well under 10 minutes on one H100/H200), each part with its own timeout:
  matmul_peak            bf16 torch.matmul peak of this GPU (the MFU denominator)
  pretrain               bf16 masked-LM pretraining of BERT-base (12 x 768, length 128), llmkit's sparse MLM head,
                         transformers' default (SDPA) attention: tokens/s and MFU (goal >= 45%)
  pretrain_peer          the same through the HF Trainer peer of bench.py (benchmarks/peers/run_mlm_peer.py), bf16
  fsdp2, deepspeed_zero2 the same model through `accelerate launch --config_file configs/accelerate/... --num_processes 1`,
                         checkpointed mid-run and resumed: the resumed run's per-step losses against the uninterrupted run's
  finetune               SST-2, 4,000 rows, MiniLM, 1 epoch (configs/finetune/sst2.yaml): wall time, dev accuracy
  finetune_peer          the run_glue-style peer of bench.py on the same rows
Without a GPU it runs a tiny CPU version in seconds (configs/tiny/*.yaml) and records the GPU-only parts as skipped.
A failed or timed-out part is recorded (status, error) and the others still run; the exit status is 0 unless the
JSON could not be written.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import PEERS, _peer_rate, minilm_dir  # noqa: E402
from common import DATA, ENV, MINILM, ROOT, bert_training_flops, llmkit, matmul_peak, median  # noqa: E402

BERT_BASE = {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072, "seq": 128, "batch": 128}
MFU_GOAL = 0.45
PEER_ON_GPU = ("import runpy, sys, transformers\n"  # the peer hard-codes use_cpu=True (it was written for the CPU)
               "_post = transformers.TrainingArguments.__post_init__\n"
               "def _on_gpu(self):\n    self.use_cpu = False\n    _post(self)\n"
               "transformers.TrainingArguments.__post_init__ = _on_gpu\n"
               "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")


class Timeout(Exception):
    pass


class Skip(Exception):
    pass


def sh(args: list, timeout: float, env: dict | None = None) -> str:
    """Run a command in its own process group (killed whole on timeout); its stdout, or RuntimeError."""
    proc = subprocess.Popen([str(a) for a in args], cwd=ROOT, env={**ENV, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise Timeout(f"{' '.join(map(str, args[:6]))} ... ran past its timeout") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{out[-3000:]}")
    return out


def last_json(out: str) -> dict:
    for line in reversed(out.splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return {}


def steps_of(out_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [line for line in lines if "loss" in line and "tokens_per_s" in line]


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise Timeout("the part ran past its timeout")
        return left


# ---------------------------------------------------------------------------------------------------- the parts

def gpu_matmul_peak(n: int = 8192, seconds: float = 5.0) -> float:
    """FLOP/s of a large bf16 square matmul on the GPU: the most it does, the MFU denominator."""
    import torch

    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
        best = max(best, 20 * 2 * n**3 / (time.perf_counter() - start))
    return best


def part_matmul_peak(ctx: dict, deadline: Deadline) -> dict:
    if ctx["gpu"]:
        peak, how = gpu_matmul_peak(), "torch.matmul bf16 8192 x 8192 on cuda, best of 20-matmul loops over 5 s"
    else:
        peak, how = matmul_peak("bfloat16", n=512, seconds=0.5), "common.matmul_peak bf16 512 x 512 on CPU, 0.5 s"
    ctx["peak"] = peak
    return {"bf16_tflops": peak / 1e12, "how": how}


def pretrain_config(ctx: dict, work: Path, name: str, steps: int, save_steps: int | None = None) -> tuple[Path, Path]:
    """A llmkit MLM config: BERT-base on wikitext-2 (or the shipped sample corpus) on a GPU, configs/tiny on a CPU."""
    out = work / name
    if not ctx["gpu"]:
        return ROOT / "configs" / "tiny" / "pretrain.yaml", out
    m = BERT_BASE
    text = ctx["corpus"]
    save = {"save_strategy": "steps", "save_steps": save_steps, "save_total_limit": None} if save_steps else \
        {"save_strategy": "no"}
    config = work / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        "output_dir": str(out), "seed": 42,
        "model": {"config": {"model_type": "bert", "hidden_size": m["hidden"], "num_hidden_layers": m["layers"],
                             "num_attention_heads": m["heads"], "intermediate_size": m["intermediate"]}},
        "tokenizer": {"name_or_path": MINILM},
        "data": {"train_file": str(text), "max_seq_length": m["seq"], "validation_split_percentage": 0},
        "pretrain": {"objective": "mlm", "sparse_prediction": True},
        "train": {"per_device_train_batch_size": m["batch"], "max_steps": steps, "learning_rate": 1e-4,
                  "mixed_precision": "bf16", "logging_steps": 1, "eval_strategy": "no", "overwrite_output_dir": True,
                  **save},
    }))
    return config, out


def pretrain_overrides(ctx: dict, out: Path, steps: int) -> list[str]:
    base = [f"output_dir={out}", "train.logging_steps=1", "train.overwrite_output_dir=true"]
    if ctx["gpu"]:
        return base
    return [*base, f"train.max_steps={steps}", "train.eval_strategy=no", "train.save_strategy=no",
            "data.max_eval_samples=64"]


def mlm_flops(ctx: dict, sparse: bool) -> tuple[dict, int]:
    m = BERT_BASE if ctx["gpu"] else {"layers": 2, "hidden": 128, "intermediate": 256, "seq": 64, "batch": 32}
    tokens = m["batch"] * m["seq"]
    vocab = ctx["vocab"]
    flops = bert_training_flops(m["layers"], m["hidden"], m["intermediate"], vocab, m["batch"], m["seq"],
                                lm_rows=round(0.15 * tokens) if sparse else tokens)
    return flops, tokens


def part_pretrain(ctx: dict, deadline: Deadline) -> dict:
    steps, warmup = (100, 20) if ctx["gpu"] else (8, 2)
    config, out = pretrain_config(ctx, ctx["work"], "pretrain", steps)
    if ctx["gpu"]:
        sh(llmkit("preprocess", config), deadline.left())  # tokenizing is not what this part times
    start = time.perf_counter()
    sh(llmkit("pretrain", config, *pretrain_overrides(ctx, out, steps)), deadline.left())
    wall = time.perf_counter() - start
    lines = steps_of(out)
    rate = median(line["tokens_per_s"] for line in lines[warmup:])
    ctx["vocab"] = json.loads((out / "config.json").read_text())["vocab_size"]
    flops, tokens = mlm_flops(ctx, sparse=True)
    mfu = rate / tokens * flops["train_step"] / ctx["peak"] if ctx.get("peak") else None
    result = {"steps": len(lines), "warmup_steps_excluded": warmup, "tokens_per_s": rate, "mfu": mfu,
              "final_loss": lines[-1]["loss"], "command_wall_s": wall, "flops_per_step": flops["train_step"],
              "attention": ctx.get("attention"), "sparse_mlm_head": True,
              "model": BERT_BASE if ctx["gpu"] else "configs/tiny/pretrain.yaml (2 x 128, length 64, batch 32)"}
    if ctx["gpu"]:
        result["mfu_goal"] = MFU_GOAL
        result["mfu_goal_reached"] = mfu is not None and mfu >= MFU_GOAL
    ctx["pretrain_rate"] = rate
    return result


def part_pretrain_peer(ctx: dict, deadline: Deadline) -> dict:
    if not ctx["gpu"]:
        raise Skip("CPU fallback: the HF Trainer peer's CPU figures come from `python benchmarks/bench.py pretrain`")
    m, steps, warmup = BERT_BASE, 100, 20
    peer = [sys.executable, "-c", PEER_ON_GPU, PEERS / "run_mlm_peer.py", "--train-file", ctx["corpus"],
            "--tokenizer", minilm_dir(), "--steps", steps, "--layers", m["layers"], "--hidden", m["hidden"],
            "--heads", m["heads"], "--batch-size", m["batch"], "--block-size", m["seq"], "--bf16",
            "--output-dir", ctx["work"] / "peer-mlm"]
    rate = _peer_rate(last_json(sh(peer, deadline.left())), warmup)
    flops, tokens = mlm_flops(ctx, sparse=False)  # the peer's head predicts every position
    mfu = rate["tokens_per_s"] / tokens * flops["train_step"] / ctx["peak"] if ctx.get("peak") else None
    result = {"steps": steps, "warmup_steps_excluded": warmup, **rate, "mfu": mfu,
              "peer": "benchmarks/peers/run_mlm_peer.py --bf16 (TrainingArguments.use_cpu forced False)"}
    if ctx.get("pretrain_rate"):
        result["llmkit_speedup"] = ctx["pretrain_rate"] / rate["tokens_per_s"]
    return result


def part_distributed(accelerate_config: str, needs: str | None = None):
    def part(ctx: dict, deadline: Deadline) -> dict:
        if not ctx["gpu"]:
            raise Skip("needs a GPU")
        if needs:
            import importlib.util

            if importlib.util.find_spec(needs) is None:
                raise Skip(f"the {needs} package is not installed (pip install {needs})")
        steps, save_at = 40, 20
        name = Path(accelerate_config).stem
        config, base_out = pretrain_config(ctx, ctx["work"], f"{name}-base", steps, save_steps=save_at)
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  ROOT / "configs" / "accelerate" / accelerate_config, "--num_processes", "1", "-m", "llmkit"]
        sh([*launch, "preprocess", config], deadline.left())
        start = time.perf_counter()
        sh([*launch, "pretrain", config, f"output_dir={base_out}"], deadline.left())
        base_wall = time.perf_counter() - start
        checkpoint = base_out / f"checkpoint-{save_at}"
        if not checkpoint.is_dir():
            raise RuntimeError(f"no {checkpoint.name} after the uninterrupted run: {sorted(p.name for p in base_out.iterdir())}")
        resumed_out = ctx["work"] / f"{name}-resumed"
        resumed_out.mkdir()
        shutil.copytree(checkpoint, resumed_out / checkpoint.name)  # the run as it stood when "interrupted"
        output = sh([*launch, "pretrain", config, f"output_dir={resumed_out}",
                     "train.resume_from_checkpoint=latest"], deadline.left())
        verdict = [line.strip() for line in output.splitlines() if "resum" in line.lower()][:3]
        base = {line["step"]: line["loss"] for line in steps_of(base_out)}
        resumed = {line["step"]: line["loss"] for line in steps_of(resumed_out) if line["step"] > save_at}
        compared = sorted(set(base) & set(resumed))
        diffs = [abs(base[s] - resumed[s]) for s in compared]
        exact = bool(compared) and len(compared) == steps - save_at and max(diffs) == 0.0
        lines = steps_of(base_out)
        return {"accelerate_config": f"configs/accelerate/{accelerate_config}", "num_processes": 1, "steps": steps,
                "checkpoint_step": save_at, "uninterrupted_wall_s": base_wall,
                "tokens_per_s": median(line["tokens_per_s"] for line in lines[5:]) if len(lines) > 5 else None,
                "steps_compared_after_resume": len(compared), "max_abs_loss_diff": max(diffs) if diffs else None,
                "resume_exact": exact, "resume_lines": verdict,
                "losses_after_resume": {"uninterrupted": [base[s] for s in compared],
                                        "resumed": [resumed[s] for s in compared]}}
    return part


def part_finetune(ctx: dict, deadline: Deadline) -> dict:
    out = ctx["work"] / "finetune"
    if ctx["gpu"]:
        sst2 = DATA / "glue" / "SST-2"
        if not (sst2 / "train.tsv").exists():
            raise Skip(f"SST-2 not found at {sst2} (set LLMKIT_BENCH_DATA or put ../shared/data next to the repo)")
        args = ["finetune", ROOT / "configs" / "finetune" / "sst2.yaml", f"data.data_dir={sst2}",
                "data.max_train_samples=4000", "train.num_train_epochs=1", "train.save_strategy=no",
                "train.overwrite_output_dir=true", f"output_dir={out}", "seed=42"]
        what = "configs/finetune/sst2.yaml, MiniLM, 4,000 rows, 1 epoch"
    else:
        args = ["finetune", ROOT / "configs" / "tiny" / "finetune.yaml", f"output_dir={out}", "train.max_steps=6",
                "train.eval_strategy=no", "train.save_strategy=no", "train.overwrite_output_dir=true",
                "data.max_train_samples=200", "data.max_eval_samples=64", "data.test_file=null"]
        what = "configs/tiny/finetune.yaml, 200 rows, 6 steps, 64 dev rows"
    start = time.perf_counter()
    sh(llmkit(*args), deadline.left())
    wall = time.perf_counter() - start
    results = out / "eval_results.json"
    accuracy = json.loads(results.read_text()).get("accuracy") if results.exists() else None
    ctx["finetune_wall"] = wall
    return {"what": what, "wall_s": wall, "accuracy": accuracy}


def part_finetune_peer(ctx: dict, deadline: Deadline) -> dict:
    if not ctx["gpu"]:
        raise Skip("CPU fallback: the run_glue peer's CPU figures come from `python benchmarks/bench.py finetune`")
    sst2 = DATA / "glue" / "SST-2"
    if not (sst2 / "train.tsv").exists():
        raise Skip(f"SST-2 not found at {sst2}")
    peer = [sys.executable, "-c", PEER_ON_GPU, PEERS / "run_glue_peer.py", "--model", minilm_dir(),
            "--train-file", sst2 / "train.tsv", "--dev-file", sst2 / "dev.tsv", "--rows", 4000, "--seed", 42,
            "--output-dir", ctx["work"] / "peer-glue"]
    start = time.perf_counter()
    result = last_json(sh(peer, deadline.left()))
    wall = time.perf_counter() - start
    out = {"wall_s": wall, "train_s": result.get("train_seconds"), "accuracy": result.get("accuracy"),
           "peer": "benchmarks/peers/run_glue_peer.py (TrainingArguments.use_cpu forced False; fp32 as written)"}
    if ctx.get("finetune_wall"):
        out["llmkit_speedup"] = wall / ctx["finetune_wall"]
    return out


# name, function, timeout on a GPU (s), timeout on the CPU (s)
PARTS = [
    ("matmul_peak", part_matmul_peak, 60, 10),
    ("pretrain", part_pretrain, 150, 45),
    ("pretrain_peer", part_pretrain_peer, 150, 5),
    ("fsdp2", part_distributed("fsdp2.yaml"), 180, 5),
    ("deepspeed_zero2", part_distributed("deepspeed_zero2.yaml", needs="deepspeed"), 180, 5),
    ("finetune", part_finetune, 120, 40),
    ("finetune_peer", part_finetune_peer, 120, 5),
]


def environment(gpu: bool) -> dict:
    import accelerate
    import torch
    import transformers

    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "gpu": gpu,
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
            "gpu_name": torch.cuda.get_device_name(0) if gpu else None,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "cuda": torch.version.cuda, "transformers": transformers.__version__,
                         "accelerate": accelerate.__version__}}
    try:
        import deepspeed

        info["versions"]["deepspeed"] = deepspeed.__version__
    except Exception:  # noqa: BLE001 - absent or broken: the deepspeed part says which
        info["versions"]["deepspeed"] = None
    return info


def attention_of(gpu: bool) -> str | None:
    """The attention implementation transformers picks for llmkit's BERT (llmkit leaves it at the default)."""
    try:
        from transformers import BertConfig, BertForMaskedLM

        size = dict(hidden_size=768, num_hidden_layers=1, num_attention_heads=12) if gpu else \
            dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100)
        return BertForMaskedLM(BertConfig(**size)).config._attn_implementation
    except Exception as error:  # noqa: BLE001
        return f"unknown ({error})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--cpu", action="store_true", help="run the CPU fallback even where a GPU is available")
    parser.add_argument("--only", nargs="*", help="run only these parts (the others are recorded as skipped)")
    args = parser.parse_args(argv)

    import torch

    gpu = torch.cuda.is_available() and not args.cpu
    report = {**environment(gpu), "parts": {}}
    work = Path(tempfile.mkdtemp(prefix="llmkit-gpu-check-"))
    corpus = DATA / "wikitext-2" / "valid.txt"  # as bench.py pretrain
    if not corpus.exists():
        from llmkit.paths import resolve_path

        corpus = Path(resolve_path("pkg:llmkit/sample_data")) / "corpus.txt"
    ctx = {"gpu": gpu, "work": work, "corpus": corpus, "attention": attention_of(gpu), "vocab": 1000}
    if gpu:
        try:
            ctx["vocab"] = len(__import__("transformers").AutoTokenizer.from_pretrained(minilm_dir()))
        except Exception:  # noqa: BLE001 - the parts that need the tokenizer fail with the reason
            pass
    report["corpus"] = str(corpus)
    total = time.perf_counter()
    for name, fn, gpu_timeout, cpu_timeout in PARTS:
        timeout = gpu_timeout if gpu else cpu_timeout
        start = time.perf_counter()
        if args.only and name not in args.only:
            entry = {"status": "skipped", "reason": "not in --only"}
        else:
            try:
                entry = {"status": "ok", **fn(ctx, Deadline(timeout))}
            except Skip as skip:
                entry = {"status": "skipped", "reason": str(skip)}
            except Timeout as error:
                entry = {"status": "failed", "error": f"timeout after {timeout} s: {error}"}
            except Exception as error:  # noqa: BLE001 - recorded; the other parts still run
                entry = {"status": "failed", "error": f"{type(error).__name__}: {error}"[-4000:],
                         "traceback": traceback.format_exc()[-2000:]}
        entry["seconds"] = round(time.perf_counter() - start, 2)
        entry["timeout_s"] = timeout
        report["parts"][name] = entry
        print(json.dumps({"part": name, "status": entry["status"], "seconds": entry["seconds"]}), flush=True)
    report["total_seconds"] = round(time.perf_counter() - total, 2)
    shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
