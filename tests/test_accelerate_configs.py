"""configs/accelerate/: Accelerate's own loader and launcher take each file as meant, and llmkit's config checks leave them out.

Everything here runs on CPU: it goes as far as the environment `accelerate launch` hands the training
processes; whether those processes then train on GPUs is not something this file can show."""

from __future__ import annotations

import shlex

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

from conftest import CONFIGS, run_cli

ACCELERATE = CONFIGS / "accelerate"
EXPECTED = {
    "ddp.yaml": DistributedType.MULTI_GPU,
    "fsdp2.yaml": DistributedType.FSDP,
    "deepspeed_zero2.yaml": DistributedType.DEEPSPEED,
    "deepspeed_zero3.yaml": DistributedType.DEEPSPEED,
}
FILES = sorted(EXPECTED)


def _launcher_options(group_title: str) -> set[str]:
    """The option names (argparse dests) of one argument group of `accelerate launch`."""
    groups = {g.title: g for g in launch_command_parser()._action_groups}
    return {action.dest for action in groups[group_title]._group_actions}


def _header_command(name: str) -> list[str]:
    """The `accelerate launch ...` line of the file's comment header, split as a shell would."""
    lines = [
        line.lstrip("#").strip()
        for line in (ACCELERATE / name).read_text().splitlines()
        if line.startswith("#") and "accelerate launch" in line
    ]
    assert len(lines) == 1, f"{name}: one `accelerate launch` line in the header, found {lines}"
    words = shlex.split(lines[0].replace('"$(nvidia-smi -L | wc -l)"', "2"))  # the GPU count, as on 2 GPUs
    assert words[:2] == ["accelerate", "launch"]
    return words[2:]


def _launch(name: str):
    """What `accelerate launch` makes of the header command: its resolved arguments and the children's environment."""
    args = launch_command_parser().parse_args(_header_command(name))
    args, defaults, mp_from_config = _validate_launch_command(args)
    if args.use_deepspeed:  # as launch_command does before the DeepSpeed launcher (which needs deepspeed itself)
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, env


def test_the_set_is_complete():
    assert sorted(p.name for p in ACCELERATE.glob("*.yaml")) == FILES


@pytest.mark.parametrize("name", FILES)
def test_loads_with_accelerates_loader(name):
    cfg = load_config_from_file(str(ACCELERATE / name))  # raises on a key ClusterConfig does not know
    assert isinstance(cfg, ClusterConfig)
    assert cfg.distributed_type == EXPECTED[name]
    assert cfg.mixed_precision == "bf16"
    assert cfg.num_processes == -1, "the GPU count comes from --num_processes on the command line"
    assert cfg.num_machines == 1


@pytest.mark.parametrize("name", FILES)
def test_section_keys_are_launcher_options(name):
    """The launcher copies fsdp_config / deepspeed_config entries onto its own options and silently drops
    any other key, so a misspelt one would just not apply."""
    raw = yaml.safe_load((ACCELERATE / name).read_text())
    fsdp_keys = {k if k.startswith("fsdp") else f"fsdp_{k}" for k in raw.get("fsdp_config", {})}
    assert fsdp_keys <= _launcher_options("FSDP Arguments"), fsdp_keys - _launcher_options("FSDP Arguments")
    ds_keys = set(raw.get("deepspeed_config", {}))
    assert ds_keys <= _launcher_options("DeepSpeed Arguments"), ds_keys - _launcher_options("DeepSpeed Arguments")
    assert bool(fsdp_keys) == (EXPECTED[name] == DistributedType.FSDP)
    assert bool(ds_keys) == (EXPECTED[name] == DistributedType.DEEPSPEED)
    # left to the llmkit config: set here, the launcher would override the training config's values
    assert not ds_keys & {"gradient_accumulation_steps", "gradient_clipping"}


@pytest.mark.parametrize("name", FILES)
def test_header_command_launches(name):
    args, env = _launch(name)
    assert args.module and args.training_script == "llmkit"
    assert args.training_script_args[0] == "pretrain"
    assert (CONFIGS.parent / args.training_script_args[1]).is_file()
    assert args.num_processes == 2 and args.mixed_precision == "bf16"
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    kind = EXPECTED[name]
    assert args.multi_gpu == (kind == DistributedType.MULTI_GPU)
    assert args.use_fsdp == (kind == DistributedType.FSDP)
    assert args.use_deepspeed == (kind == DistributedType.DEEPSPEED)


def test_fsdp2_environment_and_plugin(monkeypatch):
    _, env = _launch("fsdp2.yaml")
    assert env["ACCELERATE_USE_FSDP"] == "true"
    assert env["FSDP_VERSION"] == "2"
    assert env["FSDP_RESHARD_AFTER_FORWARD"] == "true"  # FSDP2's full shard
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert "FSDP_TRANSFORMER_CLS_TO_WRAP" not in env  # so the model's _no_split_modules decide
    assert env["FSDP_STATE_DICT_TYPE"] == "SHARDED_STATE_DICT"
    assert env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"

    # The plugin the training processes build from that environment (as Accelerator() does).
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import StateDictType

    for key, value in env.items():
        if key.startswith("FSDP_"):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True
    assert plugin.transformer_cls_names_to_wrap is None
    assert plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT
    assert plugin.cpu_ram_efficient_loading is True


@pytest.mark.parametrize(("name", "stage"), [("deepspeed_zero2.yaml", "2"), ("deepspeed_zero3.yaml", "3")])
def test_deepspeed_environment(name, stage):
    _, env = _launch(name)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == stage
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env and "ACCELERATE_GRADIENT_CLIPPING" not in env
    if stage == "3":
        assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"  # a consolidated model can be saved


def test_ddp_environment():
    _, env = _launch("ddp.yaml")
    assert "ACCELERATE_USE_FSDP" not in env and "ACCELERATE_USE_DEEPSPEED" not in env


def test_left_out_of_the_project_config_tests():
    from test_configs import SHIPPED

    assert SHIPPED and not [p for p in SHIPPED if p.is_relative_to(ACCELERATE)]


def test_validate_skips_an_accelerate_file():
    result = run_cli("validate", ACCELERATE / "fsdp2.yaml")
    assert result.exit_code == 0, result.output
    assert "skipped (an Accelerate config file" in result.output
