"""Scale-out through torchrun/Accelerate: a two-process CPU run (torchrun, gloo) of a tiny pretrain and a
tiny LoRA sft — both ranks train, end with identical weights, one output — and the launch commands built
for Accelerate with DeepSpeed, FSDP and several machines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli import app
from llmctl.launch.local import command
from llmctl.spec.launcher import LauncherSpec
from tests.conftest import run_json
from tests.stages.test_sft_reward import data, recipe, sft  # noqa: F401 - data is a fixture

TWO = "launcher: {engine: torchrun, num_processes: 2}"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["torchrun", "accelerate"])
def test_two_process_pretrain_matches_one_process_with_the_doubled_batch(
    tiny_recipe, workdir: Path, engine: str
) -> None:
    path = str(tiny_recipe(steps=10))
    code, events = run_json(
        path, f"launcher.engine={engine}", "launcher.num_processes=2", "stages.pretrain.train.batch_size=4"
    )
    assert code == 0, events[-1]
    assert any(e["event"] == "progress" for e in events)  # rank 0's events reach the parent
    two = json.loads((workdir / "runs/tiny/01-pretrain/metrics.json").read_text())
    assert two["world_size"] == 2 and two["ranks_in_sync"] is True and two["steps"] == 10
    assert (
        not (workdir / "runs/tiny/01-pretrain/ranks").exists()
        and (workdir / "runs/tiny/01-pretrain/output/model.safetensors").exists()
    )
    code, _ = run_json(path, "stages.pretrain.train.batch_size=8", "run_dir=runs/one")
    one = json.loads((workdir / "runs/one/01-pretrain/metrics.json").read_text())
    # Same optimisation, other sample order
    assert code == 0 and two["eval_loss"] == pytest.approx(one["eval_loss"], rel=0.02)


@pytest.mark.slow
def test_two_process_lora_sft(tiny_lm: Path, data: Path) -> None:  # noqa: F811
    path = recipe(
        data,
        sft("sft", str(tiny_lm), "{method: lora, r: 4, alpha: 8}", steps=4).replace(
            "    max_length: 48\n", f"    max_length: 48\n    {TWO}\n"
        ),
    )
    code, events = run_json(str(path))
    assert code == 0, events[-1]
    result = json.loads((data / "runs/t/01-sft/metrics.json").read_text())
    assert result["world_size"] == 2 and result["ranks_in_sync"] is True and "exact_match" in result


def test_launch_commands() -> None:
    ds = command(
        LauncherSpec(
            engine="accelerate",
            num_processes=8,
            num_machines=2,
            machine_rank=1,
            main_process_ip="10.0.0.1",
            mixed_precision="bf16",
            deepspeed=3,
            offload=True,
        ),
        Path("w.json"),
    )
    assert ds[1:3] == ["-m", "accelerate.commands.launch"] and ds[-3:] == ["-m", "llmctl.launch.worker", "w.json"]
    flags = " ".join(ds)
    assert "--num_processes 8 --num_machines 2 --machine_rank 1" in flags and "--main_process_ip 10.0.0.1" in flags
    assert "--use_deepspeed --zero_stage 3 --offload_optimizer_device cpu --offload_param_device cpu" in flags
    assert "--mixed_precision bf16" in flags
    fsdp = " ".join(command(LauncherSpec(engine="accelerate", num_processes=2, fsdp="FULL_SHARD"), Path("w.json")))
    assert "--use_fsdp --fsdp_sharding_strategy FULL_SHARD" in fsdp and "--multi_gpu" not in fsdp
    config = " ".join(command(LauncherSpec(engine="accelerate", deepspeed="ds.json", num_processes=2), Path("w.json")))
    assert "--deepspeed_config_file ds.json" in config
    torchrun = command(
        LauncherSpec(engine="torchrun", num_processes=4, num_machines=2, main_process_ip="h0"), Path("w.json")
    )
    assert "--nnodes=2" in torchrun and "--nproc_per_node=2" in torchrun and "--master_addr=h0" in torchrun


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("launcher: {engine: torchrun, deepspeed: 2}", "need engine: accelerate"),
        ("launcher: {engine: accelerate, num_processes: 4, num_machines: 2}", "needs main_process_ip"),
        ("launcher: {engine: accelerate, num_processes: 2, deepspeed: 2, fsdp: FULL_SHARD}", "deepspeed or fsdp"),
    ],
)
def test_bad_launchers_fail_validation(tiny_recipe, extra: str, message: str) -> None:
    path = tiny_recipe()
    path.write_text(path.read_text().replace("dtype: fp32\n", f"dtype: fp32\n{extra}\n"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and message in result.output, result.output


def test_in_process_stages_reject_a_launcher(tiny_recipe) -> None:
    path = tiny_recipe(extra=f"  - type: quantize\n    backend: inc\n    {TWO}\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "runs in-process only" in result.output


@pytest.mark.slow
def test_sigterm_reaches_every_rank_and_the_rerun_completes(tiny_recipe, workdir: Path) -> None:
    import signal

    from tests.conftest import kill_run_at_step

    path = tiny_recipe(steps=60, save_steps=1000)
    path.write_text(path.read_text().replace("dtype: fp32\n", f"dtype: fp32\n{TWO}\n"))
    assert kill_run_at_step(path, workdir, 15, signal.SIGTERM) == 130
    checkpoints = list((workdir / "runs/tiny/01-pretrain.tmp/checkpoints").glob("checkpoint-*"))
    assert len(checkpoints) == 1 and 15 <= int(checkpoints[0].name.split("-")[1]) < 60
    code, events = run_json(str(path))
    assert code == 0 and events[1]["action"] == "resume"
    logs = [e["message"] for e in events if e["event"] == "log"]
    assert any(line.startswith("resuming from") and line.endswith(checkpoints[0].name) for line in logs)
    curve = [
        json.loads(line)["step"]
        for line in (workdir / "runs/tiny/01-pretrain/logs/train.jsonl").read_text().splitlines()
    ]
    assert curve == sorted(curve)  # the resumed ranks went on from the checkpoint, not from step 0
    result = json.loads((workdir / "runs/tiny/01-pretrain/metrics.json").read_text())
    assert result["steps"] == 60 and result["ranks_in_sync"] is True
