"""`llmkit report OUTPUT_DIR` writes a run's report again, the same as the one training wrote."""

from __future__ import annotations

from conftest import CONFIGS, run_cli


def test_report_is_written_again_on_demand(tmp_path):
    result = run_cli("finetune", CONFIGS / "tiny" / "finetune.yaml", f"output_dir={tmp_path}", "train.max_steps=6",
                     "train.eval_strategy=steps", "train.eval_steps=3", "train.logging_steps=1")
    assert result.exit_code == 0, result.output
    written = (tmp_path / "report.md").read_text()
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == ["confusion_matrix.png", "evaluation.png", "per_class.png", "training.png"]
    (tmp_path / "report.md").unlink()
    for plot in (tmp_path / "plots").iterdir():
        plot.unlink()
    result = run_cli("report", tmp_path)
    assert result.exit_code == 0 and result.output.strip() == f"report: {tmp_path / 'report.md'}"
    assert (tmp_path / "report.md").read_text() == written
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == plots


def test_report_of_a_folder_that_is_no_run(tmp_path):
    result = run_cli("report", tmp_path)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: OUTPUT_DIR: {tmp_path} holds no metrics.jsonl: is it a llmkit run folder?"
