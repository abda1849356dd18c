"""Every shipped config runs: each trains two steps (or, for the untrained uses, evaluates and predicts),
with its data pointed at small local files of the names and columns it reads when it names ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import CONFIGS, REPO, run_cli

SAMPLE = REPO / "llmkit" / "sample_data"
SHIPPED = sorted(p for p in CONFIGS.rglob("*.yaml") if "accelerate" not in p.parts and not p.name.startswith("_"))
QUICK = ["train.max_steps=2", "train.per_device_train_batch_size=4", "train.per_device_eval_batch_size=8",
         "train.gradient_accumulation_steps=1", "train.logging_steps=1", "train.save_strategy=no", "train.max_time=null",
         "data.max_eval_samples=8"]


def _reviews() -> list[tuple[str, str]]:
    lines = (SAMPLE / "sentiment_train.tsv").read_text().splitlines()[1:81]
    return [tuple(line.split("\t")) for line in lines]


def _label(cfg, text: str, sentiment: str, row: int):
    """A label of the kind the config's task reads."""
    task = cfg.infer.task if cfg.infer.task != "auto" else cfg.finetune.task if cfg.finetune else None
    if task in ("regression", "embed"):
        return 4.0 if sentiment == "positive" else 1.0 + row % 3 / 2
    if task == "zero_shot":
        return list(cfg.infer.labels)[sentiment == "positive"]
    if task == "multi_label_classification":
        return [sentiment, "short" if len(text) < 40 else "long"]
    return sentiment


def _write_split(cfg, path: Path) -> None:
    """A small file in the format its suffix names, with the columns the config reads."""
    d = cfg.data
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = _reviews()
    if d.format == "parallel":  # two line-aligned files: the reviews, and their words reversed
        texts = [text for text, _ in rows]
        path.with_name(f"{path.name}.{d.source_suffix}").write_text("\n".join(texts) + "\n")
        path.with_name(f"{path.name}.{d.target_suffix}").write_text("\n".join(" ".join(t.split()[::-1])
                                                                             for t in texts) + "\n")
    elif path.suffix == ".txt":
        corpus = (SAMPLE / "corpus.txt").read_text().splitlines()[:240]
        # Blank lines between groups of six: documents whether a document is a line or a block of lines.
        path.write_text("\n".join(line + ("\n" if i % 6 == 5 else "") for i, line in enumerate(corpus)) + "\n")
    elif path.suffix == ".json":  # SQuAD format: ten articles, a question per review, its first word the answer
        path.write_text(json.dumps({"data": [{"title": f"article {a}", "paragraphs": [
            {"context": text, "qas": [{"id": f"{a}-{n}", "question": "what was it ?",
                                       "answers": [{"text": text.split()[0], "answer_start": 0}]}]}
            for n, (text, _) in enumerate(rows[a::10])]} for a in range(10)]}))
    elif path.suffix == ".conll":
        words = [text.split() for text, _ in rows]
        path.write_text("\n\n".join("\n".join(f"{w}\t{'B-thing' if w in ('food', 'room') else 'O'}" for w in ws)
                                    for ws in words) + "\n")
    else:
        columns = [c for c in (d.text_column, d.text_pair_column, d.negative_column) if c]
        table = [{**{c: text if i == 0 else rows[(n + i * 7) % len(rows)][0] for i, c in enumerate(columns)},
                  d.label_column: _label(cfg, text, sentiment, n)} for n, (text, sentiment) in enumerate(rows)]
        if d.choice_columns:  # multiple choice: a context, a question and the choices; the label is a position
            texts = [text.replace(",", "") for text, _ in rows]  # cells as written below: unquoted
            table = [{d.context_column: text, **({d.question_column: "what was it ?"} if d.question_column else {}),
                      **{c: texts[(n + i * 7) % len(texts)] for i, c in enumerate(d.choice_columns)},
                      d.label_column: n % len(d.choice_columns)} for n, text in enumerate(texts)]
        if cfg.finetune is not None and cfg.finetune.task == "seq2seq":  # sentences to join; several references
            table = [{d.source_column: [text, "."], d.target_column: [text.split()[0], text]} for text, _ in rows]
        if path.suffix == ".jsonl":
            path.write_text("".join(json.dumps(row) + "\n" for row in table))
        else:
            sep = "\t" if path.suffix == ".tsv" else ","
            header = list(table[0])
            path.write_text("\n".join(sep.join(str(row[c]) for c in header) for row in [dict(zip(header, header))]
                                      + table) + "\n")


def _local_data(config: Path, tmp_path: Path) -> list[str]:
    """Overrides pointing a config at files written under tmp_path, when it reads files outside the repository
    (../shared/data) or files the user makes first."""
    from llmkit.config import load_config
    from llmkit.paths import split_file

    cfg = load_config(config, [f"output_dir={tmp_path / 'out'}"])
    splits = [(task_cfg, split) for task_cfg in cfg.task_configs().values() for split in ("train", "validation", "test")
              if getattr(task_cfg.data, f"{split}_file")]
    local = [Path(split_file(c.data, split)).resolve() for c, split in splits]
    if all(path.is_relative_to(REPO) and path.exists() for path in local):
        return []
    for task_cfg, split in splits:
        _write_split(task_cfg, tmp_path / "data" / getattr(task_cfg.data, f"{split}_file"))
    return [f"data.data_dir={tmp_path / 'data'}"]


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_runs(config, tmp_path):
    from llmkit.config.compose import compose

    raw = compose(config).tree  # with its bases: a section may come from one
    common = [f"output_dir={tmp_path / 'out'}", *_local_data(config, tmp_path)]
    untrained = (raw.get("infer") or {}).get("task", "auto") != "auto"
    if untrained:
        result = run_cli("evaluate", config, *common, "data.max_eval_samples=8")
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert json.loads((tmp_path / "out" / "eval_results.json").read_text())["num_examples"] == 8
        result = run_cli("infer", config, *common, "--input", "-", input="the food was great .\nthe room was dirty .\n")
        assert result.exit_code == 0, result.output
        assert len(result.stdout.strip().splitlines()) == 2
        return
    stage = "pretrain" if "pretrain" in raw else "finetune"
    result = run_cli(stage, config, *common, *QUICK)
    assert result.exit_code == 0, result.output + repr(result.exception)
    lines = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == [1, 2]
    assert (tmp_path / "out" / "config.yaml").exists() and (tmp_path / "out" / "trainer_state.json").exists()
    _loads_in_its_pipeline(config, tmp_path / "out")
    _check_report(tmp_path / "out", (raw.get("finetune") or {}).get("task"))


PLOTS = {None: {"training"}, "sequence_classification": {"confusion_matrix", "per_class"},
         "multi_label_classification": {"per_class"}, "token_classification": {"per_class"}, "regression": {"predictions"}}


def _check_report(out: Path, task: str | None) -> None:
    """report.md shows the plots its task allows, each a PNG that is there."""
    import re

    text = (out / "report.md").read_text()
    shown = re.findall(r"!\[[^]]*\]\((plots/[a-z_]+\.png)\)", text)
    assert all((out / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in shown)
    evaluated = {"evaluation"} if (out / "eval_results.json").exists() else set()
    assert {Path(path).stem for path in shown} == PLOTS[None] | evaluated | PLOTS.get(task, set())
    assert "| steps | 2 of 2 |" in text


def _loads_in_its_pipeline(config: Path, out: Path) -> None:
    """The saved model (each task's, in a multi-task run) runs in the transformers pipeline its family names."""
    from transformers import pipeline

    from llmkit.config import load_config
    from llmkit.objectives import family_of

    cfg = load_config(config, [f"output_dir={out}"])
    results = json.loads((out / "eval_results.json").read_text()) if (out / "eval_results.json").exists() else {}
    for name, task_cfg in cfg.task_configs().items():
        family = family_of(task_cfg)
        own = {k.removeprefix(f"{name}_"): v for k, v in results.items() if name is None or k.startswith(f"{name}_")}
        if own:  # the metrics a family says it has are the ones it reports (the config check reads them)
            assert {k for k, v in own.items() if isinstance(v, float)} == set(family.metric_names) - {
                "num_predicted_tokens"}, family
        _check_card(Path(task_cfg.output_dir), family, own)
        if family.pipeline_task is None:  # no pipeline for it here: the card's snippet ran its Auto class instead
            continue
        mask = "" if family.pipeline_task != "fill-mask" else " [MASK]"
        text = "the food was great ." + mask
        if family.pipeline_task == "token-classification":
            result = pipeline(family.pipeline_task, model=task_cfg.output_dir)(text)
            assert isinstance(result, list)
        elif family.pipeline_task == "text-generation":
            result = pipeline(family.pipeline_task, model=task_cfg.output_dir)(text, max_new_tokens=3)
            assert result[0]["generated_text"].startswith(text)
        elif family.pipeline_task == "feature-extraction":
            result = pipeline(family.pipeline_task, model=task_cfg.output_dir)(text)
            assert len(result[0]) >= 5 and len(result[0][0]) > 8  # a vector per token
        else:
            result = pipeline(family.pipeline_task, model=task_cfg.output_dir)(text)
            assert result and all("score" in r for r in result), result


def _check_card(folder: Path, family, results: dict) -> None:
    """The model card parses, names the family's pipeline, holds eval_results.json's scores, and its usage
    snippet runs as it is."""
    import contextlib
    import io
    import re

    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == family.pipeline_task and card.data.library_name == "transformers"
    scores = {r.metric_type: r.metric_value for r in card.data.eval_results or []}
    assert scores == {k: v for k, v in results.items() if isinstance(v, (int, float)) and k != "num_examples"}
    snippet = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(snippet, {})
    assert printed.getvalue().strip()
