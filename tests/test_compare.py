"""`llmkit compare RUN_DIR...`: one Markdown table (one row per run or seed group, only the config keys that
differ) and one PNG of curves; the seed statistics behind a group's row; the ranking; bad input."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from conftest import CONFIGS, run_cli
from llmkit.compare import Row, rank_rows
from llmkit.seed_stats import lower_is_better, seed_summary, summarize_seeds

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny fine-tunes that differ in train.learning_rate, and a seed group of two more."""
    root = tmp_path_factory.mktemp("runs")
    for name, overrides in (("a", []), ("b", ["train.learning_rate=5e-4"]), ("group/seed-1", ["seed=1"]),
                            ("group/seed-2", ["seed=2"])):
        result = run_cli("finetune", CONFIGS / "tiny" / "finetune.yaml", f"output_dir={root / name}",
                         "train.max_steps=4", *overrides)
        assert result.exit_code == 0, result.output
    return root


def _table(markdown: str) -> tuple[str, list[str]]:
    """The table's header line and its rows (the |---| line between them left out)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return lines[0], lines[2:]


def _table_rows(markdown: str) -> list[str]:
    return _table(markdown)[1]


def _final_loss(run) -> float:
    return json.loads((run / "eval_results.json").read_text())["loss"]


def test_table_has_a_row_per_run_and_only_the_keys_that_differ(runs, tmp_path):
    output = tmp_path / "pr" / "compare.md"
    result = run_cli("compare", runs / "a", runs / "b", "--output", output)
    assert result.exit_code == 0, result.output
    assert result.stdout == output.read_text()
    assert result.stderr.strip() == f"compare: {output}, {tmp_path / 'pr' / 'compare.png'}"
    header, rows = _table(result.stdout)
    assert len(rows) == 2
    assert "`train.learning_rate`" in header and header.startswith("| run | loss | accuracy |")
    for equal_key in ("`seed`", "`train.max_steps`", "`model.config.hidden_size`", "output_dir"):
        assert equal_key not in header
    by_run = {row.split(" | ")[0].removeprefix("| "): row for row in rows}
    assert by_run[f"`{runs / 'a'}`"].rstrip(" |").endswith("| 0.001")
    assert by_run[f"`{runs / 'b'}`"].rstrip(" |").endswith("| 0.0005")
    # loss ranks lower first (the default metric: train.metric_for_best_model is unset)
    ranked = sorted(("a", "b"), key=lambda name: _final_loss(runs / name))
    assert [row.split(" | ")[0] for row in rows] == [f"| `{runs / name}`" for name in ranked]
    assert (tmp_path / "pr" / "compare.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "![Training loss and eval loss of each run](compare.png)" in result.stdout


def test_default_output_is_compare_md_and_png_in_the_current_directory(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("compare", runs / "a")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare.md", "compare.png"]
    assert len(_table_rows(result.stdout)) == 1


def test_a_seed_group_is_one_row_of_mean_and_confidence_interval(runs, tmp_path):
    result = run_cli("compare", runs / "a", runs / "group", "--output", tmp_path / "compare.md")
    assert result.exit_code == 0, result.output
    assert "mean ± 95% confidence half-width (Student t)" in result.stdout
    group_row = next(row for row in _table_rows(result.stdout) if row.startswith(f"| `{runs / 'group'}` (2 seeds)"))
    losses = seed_summary([_final_loss(runs / "group" / seed) for seed in ("seed-1", "seed-2")])
    half_width = (losses["ci95"][1] - losses["ci95"][0]) / 2
    assert f"| {losses['mean']:.4f} ± {half_width:.4f} (n=2) |" in group_row
    # the runs' seeds (42 against 1 and 2) are the only config difference
    assert "| `seed` |" in result.stdout and group_row.rstrip(" |").endswith("| 1, 2")


def test_summarize_seeds_covers_the_scalar_metrics_of_eval_results(runs):
    seeds = [runs / "group" / "seed-1", runs / "group" / "seed-2"]
    summary = summarize_seeds(seeds)
    assert {"loss", "accuracy", "f1"} <= set(summary)
    assert not {"num_examples", "per_class", "confusion_matrix", "split"} & set(summary)
    assert summary["loss"] == seed_summary([_final_loss(run) for run in seeds])
    json.dumps(summary)  # what the seeds feature writes to seeds.json


def test_seed_summary_matches_hand_computed_numbers():
    summary = seed_summary([0.8, 0.9, 1.0])
    # Student t's 97.5% quantile with 2 degrees of freedom in closed form: (2p - 1) / sqrt(2p(1 - p))
    t_quantile = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    half_width = 0.1 * t_quantile / math.sqrt(3)
    assert half_width == pytest.approx(0.2484, abs=1e-4)
    assert summary["mean"] == pytest.approx(0.9) and summary["std"] == pytest.approx(0.1)
    assert summary["ci95"] == pytest.approx([0.9 - half_width, 0.9 + half_width])
    assert (summary["min"], summary["max"], summary["n"]) == (0.8, 1.0, 3)


def test_seed_summary_of_one_value_has_no_spread():
    assert seed_summary([0.7]) == {"mean": 0.7, "std": 0.0, "ci95": [0.7, 0.7], "min": 0.7, "max": 0.7, "n": 1}


@pytest.mark.parametrize("metric, lower", [("loss", True), ("eval_loss", True), ("masked_lm_loss", True),
                                           ("mse", True), ("perplexity", True), ("pseudo_perplexity", True),
                                           ("accuracy", False), ("f1_micro", False), ("pearson", False)])
def test_lower_is_better_for_losses_errors_and_perplexities(metric, lower):
    assert lower_is_better(metric) is lower


def _row(label: str, metric: str, values: list[float]) -> Row:
    metrics = {metric: seed_summary(values)} if values else {}
    return Row(label, [], len(values) > 1, metrics, {}, "4", None, [])


def test_seed_groups_rank_by_the_cautious_end_of_their_interval():
    # The group's mean (0.895) beats the run, but its interval reaches far below 0.85.
    rows = [_row("unfinished", "accuracy", []), _row("noisy seeds", "accuracy", [0.80, 0.99]),
            _row("run", "accuracy", [0.85]), _row("steady seeds", "accuracy", [0.87, 0.88, 0.87])]
    assert [row.label for row in rank_rows(rows, "accuracy")] == ["steady seeds", "run", "noisy seeds",
                                                                  "unfinished"]
    # lower is better: by the upper bound
    rows = [_row("noisy seeds", "loss", [0.20, 0.40]), _row("run", "loss", [0.35])]
    assert [row.label for row in rank_rows(rows, "loss")] == ["run", "noisy seeds"]


def test_an_unfinished_run_is_listed_last_and_marked(runs, tmp_path):
    unfinished = tmp_path / "interrupted-run"
    shutil.copytree(runs / "a", unfinished)
    info = json.loads((unfinished / "run_info.json").read_text())
    (unfinished / "run_info.json").write_text(json.dumps({**info, "status": "interrupted"}))
    (unfinished / "eval_results.json").unlink()
    result = run_cli("compare", unfinished, runs / "b", "--metric", "accuracy", "--output", tmp_path / "c.md")
    assert result.exit_code == 0, result.output
    rows = _table_rows(result.stdout)
    assert rows[0].startswith(f"| `{runs / 'b'}` |")
    assert rows[1].startswith(f"| `{unfinished}` (interrupted) | — | — |")


def test_cli_help_lists_compare():
    result = run_cli("--help")
    assert result.exit_code == 0 and "compare" in result.output


@pytest.mark.parametrize("case", ["no run dir", "no config", "missing", "unknown metric"])
def test_bad_input_is_one_error_line_and_exit_2(case, runs, tmp_path):
    (tmp_path / "empty").mkdir()
    args, message = {
        "no run dir": ([], "RUN_DIR: name at least one run folder (llmkit's output_dir) or seed group to compare"),
        "no config": ([runs / "a", tmp_path / "empty"], f"RUN_DIR: {tmp_path / 'empty'} holds no config.yaml: "
                      "is it a llmkit run folder, or a seed group with seed-*/ runs?"),
        "missing": ([tmp_path / "nowhere"], f"RUN_DIR: {tmp_path / 'nowhere'} does not exist"),
        "unknown metric": ([runs / "a", "--metric", "bleu"], "--metric: 'bleu' is not in the runs' "
                           "eval_results.json; there are ['accuracy', 'f1', 'f1_binary', 'f1_micro', 'loss', "
                           "'mcc', 'precision', 'precision_micro', 'recall', 'recall_micro']"),
    }[case]
    result = run_cli("compare", *args, "--output", tmp_path / "compare.md")
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {message}"
    assert not (tmp_path / "compare.md").exists()
