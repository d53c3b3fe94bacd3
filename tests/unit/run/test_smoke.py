"""`--smoke` rewrites a recipe into a cut-down run of the same chain (no model is built here: see
tests/stages/test_tiny_models.py and tests/e2e/test_course_recipes.py)."""

from __future__ import annotations

from pathlib import Path

from llmctl.models.evaluate import token_f1
from llmctl.models.tiny import TINY, shrink_config
from llmctl.recipe import load as recipe
from llmctl.recipe import schema
from llmctl.run.smoke import SMOKE, smoke_recipe

ROOT = Path(__file__).resolve().parents[3]


def smoked(name: str, *overrides: str, cuda: bool = False) -> tuple[schema.Recipe, schema.Recipe, list[str]]:
    loaded = recipe.load(ROOT / "recipes" / f"{name}.yaml", list(overrides))
    original = schema.validate(loaded)
    cut, notes = smoke_recipe(original, cuda_visible=cuda)
    return original, cut, notes


def test_smoke_keeps_the_chain_and_its_settings_and_cuts_sizes() -> None:
    original, cut, notes = smoked("rlhf_openorca")
    assert cut.name == "rlhf-openorca-smoke" and cut.run_dir == "runs/rlhf-openorca-smoke" and cut.smoke
    assert [s.name for s in cut.stages] == [s.name for s in original.stages]
    sft, reward, ppo = cut.stages
    assert sft.peft.method == "lora" and any("qlora" in n for n in notes)  # no CUDA here
    assert (
        sft.peft.target_modules == ["q_proj", "v_proj"]
        and sft.packing
        and sft.data.template == original.stages[0].data.template
    )
    assert sft.train.max_steps == SMOKE.steps and sft.train.lr == original.stages[0].train.lr
    assert sft.data.limit == SMOKE.rows and sft.data.validation == SMOKE.held_out and sft.max_length == SMOKE.seq_len
    assert reward.data.validation == original.stages[1].data.validation  # a second source stays
    assert ppo.kl == original.stages[2].kl and ppo.stop_token is None and ppo.peft == original.stages[2].peft
    assert ppo.total_episodes == ppo.train.batch_size * ppo.train.grad_accum
    assert ppo.data.limit >= ppo.total_episodes + SMOKE.held_out and ppo.response_length == SMOKE.new_tokens


def test_qlora_stays_qlora_where_there_is_cuda() -> None:
    _, cut, notes = smoked("rlhf_openorca", cuda=True)
    assert cut.stages[0].peft.method == "qlora" and not notes


def test_smoke_never_touches_the_real_run_or_registry() -> None:
    original, cut, _ = smoked("quickstart", "stages.deploy.serve=true")
    deploy = cut.stages[-1]
    assert deploy.registry == "models-smoke" and deploy.serve is False
    assert cut.run_dir.endswith("quickstart-smoke")
    pretrain = cut.stages[0]
    assert pretrain.model.config["n_embd"] == TINY["hidden"] and "vocab_size" not in pretrain.model.config
    assert pretrain.train.max_steps == SMOKE.steps
    quantize = next(s for s in cut.stages if s.type == "quantize")
    same = {s.name: s for s in original.stages}
    assert quantize.accuracy.max_trials <= SMOKE.trials and quantize.accuracy.search == same["quantize"].accuracy.search
    bench = next(s for s in cut.stages if s.type == "benchmark" and s.speed)
    assert (
        bench.limit == SMOKE.docs
        and bench.gate == same[bench.name].gate
        and bench.local_tasks[0].data.limit == SMOKE.rows
    )


def test_shrink_keeps_module_defining_fields_and_follows_the_width() -> None:
    opt = {
        "model_type": "opt",
        "hidden_size": 2048,
        "num_hidden_layers": 24,
        "ffn_dim": 8192,
        "num_attention_heads": 32,
        "word_embed_proj_dim": 2048,
        "vocab_size": 50272,
        "max_position_embeddings": 2048,
        "do_layer_norm_before": True,
    }
    small = shrink_config(opt)
    assert (
        small["hidden_size"] == small["word_embed_proj_dim"] == TINY["hidden"]
        and small["ffn_dim"] == TINY["intermediate"]
    )
    assert (
        small["num_hidden_layers"] == TINY["layers"]
        and small["vocab_size"] == 50272
        and small["do_layer_norm_before"] is True
    )
    deberta = shrink_config(
        {
            "model_type": "deberta-v2",
            "hidden_size": 768,
            "pooler_hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "position_buckets": 256,
        }
    )
    assert deberta["pooler_hidden_size"] == TINY["hidden"] and deberta["position_buckets"] == 256
    llama = shrink_config(
        {
            "model_type": "llama",
            "hidden_size": 4096,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "num_hidden_layers": 32,
            "intermediate_size": 14336,
            "layer_types": ["full"] * 32,
        }
    )
    assert llama["num_key_value_heads"] == 1 and llama["head_dim"] == TINY["hidden"] // TINY["heads"]
    assert len(llama["layer_types"]) == TINY["layers"]


def test_squad_f1_normalises_like_the_official_script() -> None:
    assert token_f1("The Nile", "nile") == 1.0
    assert token_f1("the river Nile.", "Nile") == 2 * (1 / 2 * 1) / (1 / 2 + 1)
    assert token_f1("Paris", "France") == 0.0 and token_f1("", "") == 1.0


def test_sharegpt_turns_become_messages_with_mapped_roles() -> None:
    from llmctl.spec.formats import chat_messages

    turns = [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Hi"},
        {"from": "bot", "value": "Hello"},
    ]
    assert chat_messages(turns, {"bot": "assistant"}) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert chat_messages([{"role": "ai", "content": "x"}], {"ai": "assistant"}) == [
        {"role": "assistant", "content": "x"}
    ]


def test_a_smoke_gate_never_reads_the_production_registry() -> None:
    original, cut, notes = smoked("nightly")
    gate = next(s for s in cut.stages if s.type == "benchmark").gate
    deploy = next(s for s in cut.stages if s.type == "deploy")
    assert gate.baseline == "registry:models-smoke/nightly" and deploy.registry == "models-smoke"
    assert any("models-smoke/nightly" in note for note in notes)
