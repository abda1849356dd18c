"""How close `llmkit rehearse`'s ETA comes to the real run's wall time, on the shipped fine-tuning configs that run
here in minutes: the built-in sample (configs/tiny/finetune.yaml) and SST-2 on MiniLM, 4,000 examples for one
epoch, and 20,000 with an evaluation and a checkpoint every 300 steps.

    python benchmarks/rehearse_eta.py [tiny] [sst2] [sst2-20k] [--repeats 1]

Per config and repeat, each command alone and in a fresh process: the rehearsal with an empty cache, the real run
with another empty cache (cold: it tokenizes, or trains its tokenizer, as the rehearsal did), and the real run
with the rehearsal's cache (warm: a run after its rehearsal). The wall time counts the whole command, process
start to exit. Each command waits for the machine to be idle, and its record says how much CPU time other
processes took while it ran (`others_cpu_s`, ~0 for a clean figure). Prints one JSON line per command and a
summary per config; appends a row per config to benchmarks/RESULTS.md. The goal: ETA / real within 25%.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA, ENV, ROOT, append_result, emit, llmkit, machine, median, need, today  # noqa: E402

SST2 = f"data.data_dir={DATA / 'glue' / 'SST-2'}"
CASES = {
    "tiny": ("configs/tiny/finetune.yaml", []),
    "sst2": ("configs/finetune/sst2.yaml", ["data.max_train_samples=4000", "train.num_train_epochs=1", SST2]),
    # Five times the steps: training is most of the run, and an evaluation and a checkpoint come mid-way.
    "sst2-20k": ("configs/finetune/sst2.yaml", ["data.max_train_samples=20000", "train.num_train_epochs=1",
                                                "train.eval_strategy=steps", "train.eval_steps=300",
                                                "train.save_strategy=steps", "train.save_steps=300", SST2]),
}
ETA_LINE = re.compile(r"^ETA (\S+) for", re.MULTILINE)


def busy_cpu_seconds() -> float:
    """CPU seconds every process on the machine has spent so far (Linux /proc/stat: all but idle and iowait)."""
    user, nice, system, _, _, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_until_idle(most_s: float = 1800) -> None:
    """Other people's jobs on this machine would slow one side of the comparison: wait for them to end."""
    deadline = time.monotonic() + most_s
    while time.monotonic() < deadline:
        before = busy_cpu_seconds()
        time.sleep(2)
        if busy_cpu_seconds() - before < 0.1 * 2:  # under 5% of one core
            return
        time.sleep(10)
    emit({"warning": f"the machine was still busy after {most_s:.0f} s of waiting; measuring anyway"})


def timed(command: list, cache: Path) -> tuple[str, float, float]:
    """(stdout, wall seconds, CPU seconds other processes spent meanwhile) of a command with its own
    preprocessing cache, started once the machine is idle."""
    import resource

    wait_until_idle()
    children, busy = resource.getrusage(resource.RUSAGE_CHILDREN), busy_cpu_seconds()
    start = time.perf_counter()
    result = subprocess.run([str(c) for c in command], cwd=ROOT, env={**ENV, "LLMKIT_CACHE_DIR": str(cache)},
                            capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout, wall, max(0.0, busy_cpu_seconds() - busy - own)


def measure(name: str, work: Path) -> dict:
    """One rehearsal and the two real runs of a config."""
    from llmkit.config.training import duration_seconds

    config, overrides = CASES[name]
    rehearsal_cache, cold_cache = Path(tempfile.mkdtemp(dir=work)), Path(tempfile.mkdtemp(dir=work))
    report, rehearse_wall, others = timed(llmkit("rehearse", config, *overrides), rehearsal_cache)
    eta_line = next(line for line in report.splitlines() if line.startswith("ETA "))
    eta = duration_seconds(ETA_LINE.search(report).group(1))
    runs, others = {}, {"rehearse": round(others, 1)}
    for kind, cache in (("cold", cold_cache), ("warm", rehearsal_cache)):
        out = Path(tempfile.mkdtemp(dir=work))
        _, runs[kind], others[kind] = timed(llmkit("finetune", config, *overrides, f"output_dir={out}",
                                                   "train.overwrite_output_dir=true"), cache)
        others[kind] = round(others[kind], 1)
    record = {"config": name, "eta_s": eta, "real_cold_s": round(runs["cold"], 1),
              "real_warm_s": round(runs["warm"], 1),
              "ratio_cold": round(eta / runs["cold"], 3), "ratio_warm": round(eta / runs["warm"], 3),
              "rehearse_wall_s": round(rehearse_wall, 1), "eta_line": eta_line,
              "others_cpu_s": others}  # CPU time other processes took during each command: ~0 for a clean figure
    emit(record)
    return record


def summarize(name: str, records: list[dict]) -> None:
    config, overrides = CASES[name]
    eta, cold, warm = (median(r[key] for r in records) for key in ("eta_s", "real_cold_s", "real_warm_s"))
    emit({"benchmark": "rehearse_eta", "config": name, "repeats": len(records), "eta_s": eta, "real_cold_s": cold,
          "real_warm_s": warm, "ratio_cold": round(eta / cold, 3), "ratio_warm": round(eta / warm, 3),
          "goal": "within 0.75 to 1.25"})
    shown = " ".join([config, *(o for o in overrides if not o.startswith("data.data_dir"))])
    append_result("Rehearsal ETA (issue 17): `llmkit rehearse`'s ETA against the real run's wall time",
                  ["date", "machine", "config", "ETA", "real run, cold cache", "ETA / real", "real run after the "
                   "rehearsal (warm cache)", "ETA / real", "rehearsal's own wall time", "command"],
                  [today(), machine(), f"`{shown}`", f"{eta:.1f} s", f"{cold:.1f} s",
                   f"**{eta / cold:.2f}**", f"{warm:.1f} s", f"{eta / warm:.2f}",
                   f"{median(r['rehearse_wall_s'] for r in records):.1f} s",
                   f"`python benchmarks/rehearse_eta.py {name}`"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="config", help=f"any of {', '.join(CASES)} (default: all)")
    parser.add_argument("--repeats", type=int, default=1, help="rehearsals and real-run pairs per config")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmkit-rehearse-eta-"))
    for name in args.names or CASES:
        if name.startswith("sst2") and not need(DATA / "glue" / "SST-2" / "train.tsv"):
            continue
        summarize(name, [measure(name, work) for _ in range(args.repeats)])
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
