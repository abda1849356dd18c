"""Shell completion of config overrides: the completer itself, then the real bash/zsh protocol in-process."""

from __future__ import annotations

from typing import get_args

import pytest
from conftest import CONFIGS
from typer.testing import CliRunner

from llmkit.cli import app
from llmkit.completion import HELP_LENGTH, override_completions

FINETUNE_CONFIG = CONFIGS / "tiny" / "finetune.yaml"
PRETRAIN_CONFIG = CONFIGS / "tiny" / "pretrain.yaml"


def words(completions: list[tuple[str, str]]) -> list[str]:
    return [word for word, _ in completions]


def shell_complete(env: dict[str, str]) -> str:
    """What the installed completion script would get back from `llmkit` for this shell's request."""
    result = CliRunner().invoke(app, [], env=env, prog_name="llmkit")
    assert result.exit_code == 0, result.output
    return result.output


def test_a_partial_key_completes_to_its_keys_with_an_equals_sign():
    assert "train.learning_rate=" in words(override_completions("train.lea"))
    assert all(word.startswith("train.lea") and word.endswith("=") for word in words(override_completions("train.lea")))


def test_optional_and_nested_sections_are_unwrapped_into_their_keys():
    every_key = words(override_completions(""))
    assert {"seed=", "pretrain.objective=", "finetune.method=", "finetune.lora.r=",
            "finetune.prompt.num_virtual_tokens="} <= set(every_key)
    assert not {"train=", "finetune=", "finetune.lora="} & set(every_key)


def test_each_key_has_the_first_sentence_of_its_docstring_as_short_help():
    helps = dict(override_completions("train."))
    assert helps["train.learning_rate="]
    assert all(help and "\n" not in help and len(help) <= HELP_LENGTH for help in helps.values())


def test_a_value_is_not_completed():
    assert override_completions("train.learning_rate=") == []
    assert override_completions("no.such_key=") == []


def test_a_literal_key_completes_to_its_choices():
    from llmkit.config import TrainSection

    optimizers = get_args(TrainSection.model_fields["optim"].annotation)
    assert words(override_completions("train.optim=")) == [f"train.optim={name}" for name in optimizers]
    assert words(override_completions("train.optim=sg")) == ["train.optim=sgd"]
    # Annotated literals (with a validator) and an Optional section's literal
    assert words(override_completions("train.mixed_precision=bf")) == ["train.mixed_precision=bf16"]
    assert "pretrain.objective=clm" in words(override_completions("pretrain.objective="))


def test_a_config_gets_the_keys_of_its_kind_only():
    finetune_keys = words(override_completions("", FINETUNE_CONFIG, "finetune"))
    pretrain_keys = words(override_completions("", PRETRAIN_CONFIG, "pretrain"))
    assert "finetune.method=" in finetune_keys and "train.learning_rate=" in finetune_keys
    assert not any(key.startswith("pretrain.") for key in finetune_keys)
    assert "pretrain.objective=" in pretrain_keys and "train.learning_rate=" in pretrain_keys
    assert not any(key.startswith("finetune.") for key in pretrain_keys)


def test_a_config_with_neither_section_gets_the_stages_kind(tmp_path):
    config = tmp_path / "plain.yaml"
    config.write_text("output_dir: runs/x\n")
    assert "pretrain.objective=" not in words(override_completions("", config, "infer"))
    assert "finetune.method=" not in words(override_completions("", config, "preprocess"))


@pytest.mark.parametrize("content", [None, "", "- a list\n", "key: [unclosed\n", b"\xff\xfe"])
def test_an_unreadable_config_still_gets_every_key(tmp_path, content):
    config = tmp_path / "config.yaml"
    if isinstance(content, bytes):
        config.write_bytes(content)
    elif content is not None:
        config.write_text(content)
    keys = words(override_completions("", config, "finetune"))
    assert {"pretrain.objective=", "finetune.method=", "train.learning_rate="} <= set(keys)
    assert words(override_completions("", tmp_path, "finetune")) == keys  # a folder


def test_bash_completes_a_key_through_the_cli():
    output = shell_complete({"_LLMKIT_COMPLETE": "complete_bash", "COMP_CWORD": "3",
                             "COMP_WORDS": f"llmkit finetune {FINETUNE_CONFIG} train.lea"})
    assert "train.learning_rate=" in output.splitlines()


@pytest.mark.parametrize("typed, cword", [("train.optim =", 4), ("train.optim = sg", 5)])
def test_bash_completes_a_choice_after_the_equals_sign_it_split_off(typed, cword):
    # bash hands `train.optim=sg` over as three words and replaces only the text after the `=`
    output = shell_complete({"_LLMKIT_COMPLETE": "complete_bash", "COMP_CWORD": str(cword),
                             "COMP_WORDS": f"llmkit finetune {FINETUNE_CONFIG} {typed}"})
    assert "sgd" in output.splitlines()
    assert not any("=" in line for line in output.splitlines())


def test_zsh_gets_the_keys_with_their_help_and_only_the_configs_kind():
    output = shell_complete({"_LLMKIT_COMPLETE": "complete_zsh",
                             "_TYPER_COMPLETE_ARGS": f"llmkit pretrain {PRETRAIN_CONFIG} pretrain.obj"})
    assert '"pretrain.objective=":"' in output
    output = shell_complete({"_LLMKIT_COMPLETE": "complete_zsh",
                             "_TYPER_COMPLETE_ARGS": f"llmkit finetune {FINETUNE_CONFIG} pretrain.obj"})
    assert "pretrain.objective=" not in output


def test_help_offers_to_install_completion():
    result = CliRunner().invoke(app, ["--help"], prog_name="llmkit")
    assert result.exit_code == 0
    assert "--install-completion" in result.output and "--show-completion" in result.output
