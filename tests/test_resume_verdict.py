"""The resume verdict (llmkit.resume): a resumed run says in one line whether it continues exactly, continues not
bitwise (changed training settings are applied), or is refused (another model, tokenizer, data or objective:
exit 2 and output_dir untouched, unless train.resume_force=true)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, REPO, read_jsonl, run_cli

PRETRAIN = CONFIGS / "tiny" / "pretrain.yaml"
# 6 steps, a checkpoint at 3; the tiny config's linear schedule with warmup_ratio 0.1 (one warmup step).
SHORT = ["train.max_steps=6", "train.save_steps=3", "train.eval_strategy=no", "train.logging_steps=1",
         "train.save_total_limit=null"]
REFUSAL_END = ("Force it with train.resume_force=true, or start fresh with train.overwrite_output_dir=true or "
               "another output_dir")


def pretrain(out: Path, *extra: str):
    return run_cli("pretrain", PRETRAIN, f"output_dir={out}", *SHORT, *extra)


def resume(out: Path, *extra: str):
    return pretrain(out, "train.resume_from_checkpoint=latest", *extra)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    """A finished 6-step run that saved checkpoint-3."""
    out = tmp_path_factory.mktemp("original") / "run"
    result = pretrain(out)
    assert result.exit_code == 0, result.output
    return out


def stopped_at_3(original: Path, folder: Path) -> Path:
    """A copy of the run as a crash after checkpoint-3 leaves it: not finished."""
    shutil.copytree(original, folder)
    (folder / "trainer_state.json").unlink()
    return folder


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(out / "model.safetensors")


def same_weights(a: Path, b: Path) -> bool:
    x, y = weights(a), weights(b)
    return x.keys() == y.keys() and all((x[k] == y[k]).all() for k in x)


def logged_rates(out: Path) -> dict:
    return {x["step"]: x["learning_rate"] for x in read_jsonl(out / "metrics.jsonl") if "loss" in x}


def verdict_for(original: Path, *overrides: str, num_processes: int | None = None):
    from llmkit.config import load_config
    from llmkit.resume import resume_verdict

    cfg = load_config(PRETRAIN, [f"output_dir={original}", *SHORT, *overrides], stage="pretrain")
    return resume_verdict(cfg, num_processes)


def test_a_plain_resume_is_exact_and_bitwise(original, tmp_path):
    out = stopped_at_3(original, tmp_path / "run")
    result = resume(out)
    assert result.exit_code == 0, result.output
    assert f"resume from {out / 'checkpoint-3'} at step 3: exact (nothing that matters changed)\n" in result.output
    assert same_weights(out, original)


def test_another_model_shape_is_refused_and_leaves_the_folder_untouched(original, tmp_path):
    out = stopped_at_3(original, tmp_path / "run")
    before = snapshot(out)
    result = resume(out, "model.config.hidden_size=64")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"error: train.resume_from_checkpoint: refused to resume {out / 'checkpoint-3'} (step 3): "
        f"model.config.hidden_size 128 -> 64. {REFUSAL_END}")
    assert snapshot(out) == before


def test_resume_force_continues_the_checkpoints_model(original, tmp_path):
    out = stopped_at_3(original, tmp_path / "run")
    result = resume(out, "model.config.hidden_size=64", "train.resume_force=true")
    assert result.exit_code == 0, result.output
    assert (f"resume from {out / 'checkpoint-3'} at step 3: forced by train.resume_force=true despite "
            "model.config.hidden_size 128 -> 64\n") in result.output
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 128  # the checkpoint's model went on


@pytest.mark.parametrize("change,line", [("train.learning_rate=5e-4", "train.learning_rate 0.001 -> 0.0005"),
                                         ("train.lr_scheduler_type=cosine", "train.lr_scheduler_type linear -> cosine"),
                                         ("train.max_steps=8", "train.max_steps 6 -> 8")],
                         ids=["learning_rate", "scheduler", "max_steps"])
def test_a_changed_schedule_continues_not_bitwise_and_is_applied(change, line, original, tmp_path, monkeypatch):
    import torch

    used, real_step = [], torch.optim.AdamW.step

    def step(self, *args, **kwargs):  # the learning rate each optimizer step actually uses
        used.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    assert pretrain(tmp_path / "planned", change).exit_code == 0  # the schedule planned so from the start
    planned, used[:] = list(used), []
    out = stopped_at_3(original, tmp_path / "run")
    result = resume(out, change)
    assert result.exit_code == 0, result.output
    assert (f"at step 3: continues, not bitwise: {line} (the optimizer and schedule follow this config from "
            "step 3)\n") in result.output
    assert len(planned) > 3 and used == planned[3:]  # from step 4 on, the rates the new schedule plans
    resumed, old, new = (logged_rates(d) for d in (out, original, tmp_path / "planned"))
    assert [resumed[s] for s in (1, 2, 3)] == [old[s] for s in (1, 2, 3)]  # logged before the checkpoint
    assert {s: r for s, r in resumed.items() if s > 3} == {s: r for s, r in new.items() if s > 3}
    assert resumed[4] != old[4]


def test_changed_data_is_refused_and_moved_data_is_not(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(REPO / "llmkit" / "sample_data" / "corpus.txt", data / "corpus.txt")
    out = tmp_path / "run"
    assert pretrain(out, f"data.data_dir={data}").exit_code == 0
    (out / "trainer_state.json").unlink()
    shutil.copytree(data, tmp_path / "moved")
    assert verdict_for(out, f"data.data_dir={tmp_path / 'moved'}").kind == "exact"

    size = (data / "corpus.txt").stat().st_size
    with (data / "corpus.txt").open("a") as f:
        f.write("A line that was not there before.\n")
    before = snapshot(out)
    result = resume(out, f"data.data_dir={data}")
    assert result.exit_code == 2
    error = result.output.strip().splitlines()[-1]
    assert error.startswith(f"error: train.resume_from_checkpoint: refused to resume {out / 'checkpoint-3'} (step 3): "
                            f"data.train_file content {size:,} bytes ") and error.endswith(REFUSAL_END)
    assert snapshot(out) == before


def test_a_checkpoint_without_fingerprint_continues(original, tmp_path):
    out = stopped_at_3(original, tmp_path / "run")
    (out / "checkpoint-3" / "fingerprint.json").unlink()
    result = resume(out)
    assert result.exit_code == 0, result.output
    assert (f"resume from {out / 'checkpoint-3'} at step 3: continues (the checkpoint has no fingerprint: written by "
            "an older llmkit)\n") in result.output
    assert same_weights(out, original)  # this config's schedule re-planned: the same, as nothing changed


def test_settings_that_do_not_matter_leave_it_exact(original, tmp_path):
    verdict = verdict_for(original, f"output_dir={tmp_path}", f"train.resume_from_checkpoint={original}/checkpoint-3",
                          "train.logging_steps=5", "train.eval_strategy=steps", "train.eval_steps=2",
                          "train.save_steps=7", "train.save_total_limit=2", "train.per_device_eval_batch_size=4",
                          "train.overwrite_output_dir=true", "data.max_eval_samples=10", "infer.max_new_tokens=3",
                          "train.num_train_epochs=2")  # not read: train.max_steps is set
    assert verdict.kind == "exact" and verdict.lines == []


def test_more_processes_and_other_versions_continue_not_bitwise(original, monkeypatch):
    import llmkit.resume

    versions = llmkit.resume.package_versions()
    monkeypatch.setattr(llmkit.resume, "package_versions", lambda: {**versions, "torch": "9.9"})
    verdict = verdict_for(original, num_processes=2)
    assert verdict.kind == "continues" and verdict.replans
    assert verdict.lines == ["processes 1 -> 2", "global batch 32 -> 64", f"torch {versions['torch']} -> 9.9"]


def test_the_objective_and_the_examples_refuse_unless_forced(original):
    verdict = verdict_for(original, "pretrain.objective=clm", "data.max_seq_length=32", "train.warmup_steps=2")
    assert verdict.kind == "refused"
    assert verdict.lines == ["data.max_seq_length 64 -> 32", "pretrain.objective mlm -> clm",
                             "train.warmup_steps 0 -> 2"]
    forced = verdict_for(original, "pretrain.objective=clm", "train.resume_force=true")
    assert forced.kind == "forced" and "forced by train.resume_force=true despite pretrain.objective" in forced.line


def test_the_tokenizers_files_are_compared_by_content(original, tmp_path):
    from llmkit.config import load_config
    from llmkit.resume import fingerprint, judge

    folder = tmp_path / "tokenizer"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(original / name, folder / name)
    cfg = load_config(PRETRAIN, [f"output_dir={tmp_path}", f"tokenizer.name_or_path={folder}"], stage="pretrain")
    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text('{"global_step": 3}')
    (checkpoint / "fingerprint.json").write_text(json.dumps(fingerprint(cfg, 1)))
    assert judge(checkpoint, fingerprint(cfg, 1), force=False).kind == "exact"
    (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text().replace('"[MASK]"', '"[HIDE]"'))
    verdict = judge(checkpoint, fingerprint(cfg, 1), force=False)
    assert verdict.kind == "refused" and verdict.lines[0].startswith("the tokenizer's files ")


def test_no_checkpoint_no_verdict(tmp_path):
    assert verdict_for(tmp_path / "empty") is None


def test_every_config_key_has_a_class():
    from llmkit.config import Config, flatten, load_config
    from llmkit.resume import key_class

    configs = [load_config(CONFIGS / "tiny" / name, stage=stage) for name, stage in
               (("pretrain.yaml", "pretrain"), ("clm.yaml", "pretrain"), ("finetune.yaml", "finetune"))]
    multi_task = yaml.safe_load((CONFIGS / "tiny" / "finetune.yaml").read_text())
    del multi_task["finetune"]["task"]
    multi_task["finetune"]["tasks"] = {"score": {"task": "regression", "proportion": 1, "data": {"label_column": "y"}}}
    configs.append(Config.model_validate(multi_task))
    keys = {key for cfg in configs for key in flatten(cfg.model_dump(mode="json"))}
    assert sorted(key for key in keys if key_class(key) is None) == []
