"""Two torchrun "nodes" on loopback (static rendezvous, --nnodes 2, one process each) are one DDP run: the
losses of one node with two processes, one writer, and one preprocessing of the shared cache."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from test_distributed import COMMON, PRETRAIN

from conftest import REPO, read_jsonl

TIMEOUT = 300  # two cores, and other tests may be running beside these


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `python -m llmkit`, noting in $BUILDS the global rank of each process that builds a corpus.
COUNTING = """import os, runpy
import llmkit.data.corpus as corpus
build = corpus._build
def counted(*args):
    with open(os.environ["BUILDS"], "a") as f:
        f.write(os.environ["RANK"] + "\\n")
    return build(*args)
corpus._build = counted
runpy.run_module("llmkit", run_name="__main__", alter_sys=True)
"""


def _launch(launcher: list[str], out, cache, *extra, builds=None):
    """`torchrun LAUNCHER -m llmkit pretrain` in its own process group, output captured; with `builds` (a
    file), through COUNTING."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LLMKIT_CACHE_DIR": str(cache)}
    main = ["-m", "llmkit"]
    if builds is not None:
        (script := builds.with_suffix(".py")).write_text(COUNTING)
        env["BUILDS"], main = str(builds), [str(script)]
    log = tempfile.TemporaryFile("w+")  # not a pipe: an unread node must never block on a full one
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", *launcher, *main, "pretrain", str(PRETRAIN),
         f"output_dir={out}", "train.per_device_train_batch_size=16", *COMMON, *extra],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    proc.log = log
    return proc


def _output(proc: subprocess.Popen) -> str:
    proc.log.seek(0)
    return proc.log.read()


def _nodes(out, cache, *extra, builds=None) -> list[subprocess.Popen]:
    """Two nodes, started together, on 127.0.0.1 (static rendezvous at node 0)."""
    port = _free_port()
    return [_launch(["--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank),
                     "--master_addr", "127.0.0.1", "--master_port", str(port)], out, cache, *extra, builds=builds)
            for rank in (0, 1)]


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    """Each process's output once all have exited 0; on a failure or timeout, every group is killed."""
    try:
        for proc in procs:
            proc.wait(timeout=TIMEOUT)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
    outputs = [_output(proc) for proc in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    return outputs


def _losses(run) -> list[tuple[int, float]]:
    return [(x["step"], x["loss"]) for x in read_jsonl(run / "metrics.jsonl") if "loss" in x]


def test_two_nodes_match_one_node_with_two_processes(tmp_path):
    cache = tmp_path / "cache"  # fresh: the two nodes, sharing it as on loopback, find no corpus there
    nodes = tmp_path / "nodes"
    builds = tmp_path / "builds"
    node0, node1 = _finish(_nodes(nodes, cache, "train.max_steps=4", builds=builds))
    info = json.loads((nodes / "run_info.json").read_text())
    assert info["num_processes"] == 2 and "MULTI_CPU" in info["distributed_type"]
    assert (nodes / "model.safetensors").exists() and (nodes / "checkpoint-3").is_dir()
    # Only global rank 0 speaks and writes: node 1's process is local rank 0, and must stay quiet.
    assert node0.count("pretrain done") == 1 and "pretrain done" not in node1 and "parameters" not in node1
    assert [step for step, _ in _losses(nodes)] == [1, 2, 3, 4]
    # Preprocessed once, by global rank 0 inside main_process_first; node 1 waits for it, then reads the cache.
    assert builds.read_text().split() == ["0"]
    assert len(list((cache / "corpus").iterdir())) == 1  # one corpus, no leftover temporary folder

    one = tmp_path / "one"
    _finish([_launch(["--nproc_per_node", "2", "--master_port", str(_free_port())], one, cache,
                     "train.max_steps=4")])
    assert len(list((cache / "corpus").iterdir())) == 1  # the same corpus, read from the cache
    diffs = [abs(a - b) for (_, a), (_, b) in zip(_losses(one), _losses(nodes), strict=True)]
    print("two nodes vs one node, per-step |loss difference|:", diffs)
    assert max(diffs) <= 1e-3, (_losses(one), _losses(nodes))


def test_two_nodes_resume_after_a_kill_is_exact(tmp_path):
    from safetensors.torch import load_file

    cache, extra = tmp_path / "cache", ["train.max_steps=8", "train.save_steps=3", "train.save_total_limit=null"]
    baseline = tmp_path / "baseline"
    _finish(_nodes(baseline, cache, *extra))

    run = tmp_path / "run"
    killed = _nodes(run, cache, *extra)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (run / "checkpoint-3" / "rng_state_1.json").exists():
            assert all(p.poll() is None for p in killed), [_output(p)[-3000:] for p in killed]
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        for proc in killed:  # both nodes at once, mid-run
            os.killpg(proc.pid, signal.SIGKILL)
        for proc in killed:
            proc.wait(timeout=60)
    assert not (run / "model.safetensors").exists()  # really killed before the end
    _finish(_nodes(run, cache, *extra, "train.resume_from_checkpoint=latest"))

    assert _losses(run) == _losses(baseline) and len(_losses(run)) == 8
    a, b = load_file(run / "model.safetensors"), load_file(baseline / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
