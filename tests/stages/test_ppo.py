"""ppo (PPO, RLOO, GRPO) on a tiny GPT-2 chain sft → reward → ppo, the tokenizer-mismatch path, guard rails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmctl.data.demo import qa_pairs
from tests.conftest import kill_run_at_step, make_tiny_lm
from tests.stages.test_sft_reward import REWARD, data, metrics, recipe, run, sft  # noqa: F401 - data is a fixture

pytestmark = pytest.mark.slow

PPO = """\
  - type: ppo
    algorithm: {algorithm}
    model: previous
    reward_model: {reward}
    data: {{path: prompts.jsonl, format: prompt, validation: 8}}
    total_episodes: {episodes}
    train: {{batch_size: 8, lr: 1.0e-4}}
    mini_batches: 2
    ppo_epochs: 1
    num_generations: 2
    kl: {kl}
    response_length: {length}
    samples: ["Question: What is 3 plus 4?\\n\\nAnswer:"]
    eval_set: {{path: qa.jsonl, limit: 8, columns: {{prompt: question, completion: answer}},
                template: "Question: {{prompt}}\\n\\nAnswer: {{completion}}", max_new_tokens: 3}}
"""


def ppo(
    algorithm: str = "ppo", reward: str = "previous", kl: str = "{init: 0.05}", length: int = 4, episodes: int = 48
) -> str:
    return PPO.format(algorithm=algorithm, reward=reward, kl=kl, length=length, episodes=episodes)


@pytest.fixture
def prompts(data: Path) -> Path:  # noqa: F811 - the fixture imported above
    rows = [{"prompt": f"Question: {p['question']}\n\nAnswer:"} for p in qa_pairs(64, 3)]
    (data / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


@pytest.mark.parametrize("algorithm", ["ppo", "rloo", "grpo"])
def test_rl_after_sft_and_reward(tiny_lm: Path, prompts: Path, algorithm: str) -> None:
    from transformers import AutoModelForCausalLM

    path = recipe(
        prompts,
        sft("sft", str(tiny_lm), "{method: none}", steps=2),
        REWARD.format(name="rm", model="previous"),
        ppo(algorithm),
    )
    code, events = run(path)
    assert code == 0, events[-1]  # run() parses every stdout line as JSON: nothing else may print there
    result = metrics(prompts, "03-ppo")
    assert {
        "mean_reward_before",
        "mean_reward",
        "exact_match_before",
        "exact_match",
        "score_first",
        "kl_last",
    } <= result.keys()
    (sample,) = result["samples"]
    assert sample["prompt"] == "Question: What is 3 plus 4?\n\nAnswer:" and {"before", "output"} <= sample.keys()
    plan = {s["stage"]: s["inputs"] for s in events[0]["steps"]}
    assert plan["ppo"] == {"model": "stage:sft", "reward_model": "stage:rm"}  # the reward stage is not the policy
    AutoModelForCausalLM.from_pretrained(prompts / "runs/t/03-ppo/output")


def test_reward_model_with_another_tokenizer(tiny_lm: Path, prompts: Path, tmp_path: Path) -> None:
    other = make_tiny_lm(tmp_path / "other-lm", vocab=330)
    path = recipe(
        prompts,
        sft("sft", str(tiny_lm), "{method: none}", steps=2),
        REWARD.format(name="rm", model=str(other)),
        ppo("ppo", reward="stage:rm"),
    )
    code, events = run(path)
    assert code == 0, events[-1]
    assert metrics(prompts, "03-ppo")["mean_reward"] is not None


def test_guard_rails(tiny_lm: Path, prompts: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from llmctl.models.causal_lm import load_tokenizer

    two_outputs = tmp_path / "classifier"
    AutoModelForSequenceClassification.from_pretrained(tiny_lm, num_labels=2).save_pretrained(two_outputs)
    load_tokenizer(str(tiny_lm)).save_pretrained(two_outputs)
    base = sft("sft", str(tiny_lm), "{method: none}", steps=1)

    code, events = run(recipe(prompts, base, ppo(reward=str(two_outputs))))
    assert code == 2 and "it has 2 outputs; a reward model must output one scalar" in events[-1]["message"]

    code, events = run(recipe(prompts, base, REWARD.format(name="rm", model="previous"), ppo(length=60)))
    assert code == 2 and "exceed the policy's context of 64 tokens" in events[-1]["message"]

    code, events = run(
        recipe(prompts, base, REWARD.format(name="rm", model="previous"), ppo(kl="{init: 0.0, limit: 1.0e-9}"))
    )
    assert code == 4 and "KL to the reference reached" in events[-1]["message"] and "kl.limit" in events[-1]["message"]


def test_sigterm_mid_ppo_then_resume_continues_from_the_checkpoint(tiny_lm: Path, prompts: Path) -> None:
    """TRL's PPO has no resume: llmctl saves the value model into each checkpoint and reloads policy, value model
    and optimizer state, then runs only the remaining updates."""
    import signal

    import torch
    from safetensors.torch import load_file

    # 20 updates of 8 prompts, no periodic checkpoint
    path = recipe(
        prompts,
        sft("sft", str(tiny_lm), "{method: none}", steps=2),
        REWARD.format(name="rm", model="previous"),
        ppo(episodes=160),
    )
    assert kill_run_at_step(path, prompts, 5, signal.SIGTERM, stage="ppo") == 130
    (checkpoint,) = (prompts / "runs/t/03-ppo.tmp/checkpoints").glob("checkpoint-*")
    done = int(checkpoint.name.split("-")[1])
    assert (
        5 <= done < 20 and (checkpoint / "value_model/config.json").exists() and (checkpoint / "optimizer.pt").exists()
    )
    saved = load_file(checkpoint / "model.safetensors")

    code, events = run(path)
    assert code == 0, events[-1]
    assert [e["action"] for e in events[0]["steps"]] == ["cached", "cached", "resume"]
    log = (prompts / "runs/t/03-ppo/logs/stage.log").read_text()
    assert f"resuming PPO from {checkpoint.name}: {done} of 20 updates done" in log
    steps = [json.loads(line)["step"] for line in (prompts / "runs/t/03-ppo/logs/train.jsonl").read_text().splitlines()]
    assert steps[-1] == 20 and steps.count(done + 1) == 1  # the resumed run counted on from the checkpoint
    final = load_file(prompts / "runs/t/03-ppo/output/model.safetensors")
    assert any(not torch.equal(saved[name], final[name]) for name in saved)  # training went on from there


GRPO_FN = """\
  - type: ppo
    name: grpo
    algorithm: grpo
    model: previous
    data: {{path: qa.jsonl, format: prompt, columns: {{prompt: question}}, template: "Question: {{prompt}}\\n\\nAnswer:",
            validation: 8}}
    rewards:
      - {{builtin: numeric_match, column: answer}}
      - {{function: my_rewards.py:{function}, weight: 0.5}}
    total_episodes: 16
    train: {{batch_size: 8, lr: 1.0e-4}}
    num_generations: 2
    response_length: 4
"""
REWARDS_PY = (
    "def brief(prompts, completions, **columns):\n"
    "    assert 'answer' in columns  # the prompt data's columns reach every reward function\n"
    "    return [1.0 if len(c.strip()) <= {limit} else 0.0 for c in completions]\n"
    "def words(prompts, completions, **columns):\n    return ['good' for c in completions]\n"
)


def test_grpo_with_reward_functions_needs_no_reward_model_and_reruns_when_the_function_changes(
    tiny_lm: Path,
    data: Path,  # noqa: F811 - the fixture imported above
) -> None:
    (data / "my_rewards.py").write_text(REWARDS_PY.replace("{limit}", "3"))
    path = recipe(data, sft("sft", str(tiny_lm), "{method: none}", steps=2), GRPO_FN.format(function="brief"))
    code, events = run(path)
    assert code == 0, events[-1]
    plan = {s["stage"]: s["inputs"] for s in events[0]["steps"]}
    assert plan["grpo"] == {"model": "stage:sft"}  # functions only: no reward model read
    result = metrics(data, "02-grpo")
    assert {"mean_reward_before", "mean_reward"} <= result.keys()
    assert [s["action"] for s in run(path)[1][0]["steps"]] == ["cached", "cached"]
    (data / "my_rewards.py").write_text(REWARDS_PY.replace("{limit}", "5"))  # edit the function's file
    code, events = run(path)
    assert code == 0 and {s["stage"]: s["reason"] for s in events[0]["steps"]}["grpo"] == "changed: data"

    text = path.read_text()
    path.write_text(text.replace("my_rewards.py:brief", "my_rewards.py:words"))
    code, events = run(path)
    assert code == 4, events[-1]
    assert "rewards[1] (words) returned 'good'; each value must be a finite number" in events[-1]["message"]
    path.write_text(text.replace("my_rewards.py:brief", "my_rewards.py:nothing"))
    code, events = run(path)
    assert code == 2 and events[-1]["stage"] == "grpo" and "has no function 'nothing'" in events[-1]["message"]
    path.write_text(text.replace("my_rewards.py:brief", "missing.py:brief"))
    code, events = run(path)
    assert code == 2 and "rewards[1].function: no file or folder matches 'missing.py'" in events[-1]["message"]


def test_grpo_objectives_are_recipe_keys_validated_and_passed_to_trl(tiny_lm: Path, data: Path) -> None:  # noqa: F811
    import pydantic

    from llmctl.stages.ppo import LossSpec, PPOSpec, objective_kwargs

    prompts = {"path": "qa.jsonl", "format": "prompt", "columns": {"prompt": "question"}}
    spec = PPOSpec(
        algorithm="grpo", data=prompts, train={"batch_size": 4}, num_generations=2, num_iterations=2,
        loss={"type": "luspo", "importance_sampling": "sequence", "epsilon_high": 0.28, "scale_rewards": "none"},
    )  # fmt: skip
    assert objective_kwargs(spec) == {
        "epsilon": 0.2, "epsilon_high": 0.28, "mask_truncated_completions": False, "num_iterations": 2,
        "loss_type": "luspo", "importance_sampling_level": "sequence", "scale_rewards": "none",
        "top_entropy_quantile": 1.0, "entropy_coef": 0.0,
    }  # fmt: skip
    for bad, why in (
        ({"type": "luspo"}, "needs|sequence-level"),
        ({"epsilon": 0.3, "epsilon_high": 0.2}, "below loss.epsilon"),
        ({"type": "grpo_plus"}, "Input should be"),
    ):
        with pytest.raises(pydantic.ValidationError, match=why):
            LossSpec(**bad)
    with pytest.raises(pydantic.ValidationError, match="RLOO takes loss.epsilon"):
        PPOSpec(algorithm="rloo", data=prompts, train={"batch_size": 4}, num_generations=2, loss={"type": "dr_grpo"})
    with pytest.raises(pydantic.ValidationError, match="RLOO/GRPO settings"):
        PPOSpec(algorithm="ppo", data=prompts, num_iterations=2)
    # …and TRL takes them: a tiny GRPO run with a GSPO-style objective
    (data / "my_rewards.py").write_text(REWARDS_PY.replace("{limit}", "3"))
    stage = GRPO_FN.format(function="brief").replace(
        "    num_generations: 2\n",
        "    num_generations: 2\n    num_iterations: 2\n"
        "    loss: {type: dr_grpo, importance_sampling: sequence, epsilon_high: 0.28, scale_rewards: none}\n",
    )
    path = recipe(data, sft("sft", str(tiny_lm), "{method: none}", steps=2), stage)
    code, events = run(path)
    assert code == 0, events[-1]
    assert "mean_reward" in metrics(data, "02-grpo")
