"""A trained reward model as PPO/RLOO/GRPO use it: it scores (prompt, response) texts with its own tokenizer,
which may differ from the policy's (the course pairs an OPT policy with a DeBERTa-v3 reward model)."""

from __future__ import annotations

from typing import Any

from llmctl.errors import RecipeMismatch


def tolerate_use_cache(model: Any) -> Any:
    """`model`, made to ignore the `use_cache=False` that TRL 1.12's RewardTrainer passes to every model:
    encoders (the course's DeBERTa-v3, BERT) take no such argument and fail with a TypeError."""
    import inspect

    if "use_cache" not in inspect.signature(model.forward).parameters:
        model.register_forward_pre_hook(
            lambda module, args, kwargs: (args, {k: v for k, v in kwargs.items() if k != "use_cache"}), with_kwargs=True
        )
    return model


class RewardScorer:
    """The reward model: scores (prompt, response) texts with its own tokenizer, which may differ from the
    policy's (the course pairs OPT with DeBERTa)."""

    def __init__(self, path: str, policy_tokenizer: Any) -> None:
        from transformers import AutoModelForSequenceClassification

        from llmctl.models.causal_lm import load_tokenizer

        self.path = path
        self.model = AutoModelForSequenceClassification.from_pretrained(path)
        labels = self.model.config.num_labels
        if labels != 1:
            raise RecipeMismatch(
                "reward_model",
                f"reward_model {path}: it has {labels} outputs; a reward model must output one scalar "
                "(train it with a reward stage, or num_labels: 1)",
            )
        self.tokenizer = load_tokenizer(path)
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.same_tokenizer = self.tokenizer.get_vocab() == policy_tokenizer.get_vocab()

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        texts = [p + r for p, r in zip(prompts, responses, strict=False)]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, return_token_type_ids=False)
        with torch.no_grad():
            return self.model(**batch).logits[:, 0].float().tolist()

    def reward_function(self) -> Any:
        """A TRL reward function (RLOO/GRPO): text in, one float per completion out."""

        def reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
            return self(prompts, completions)

        reward.__name__ = "reward_model"
        return reward


def retokenizing_reward(scorer: RewardScorer, policy_tokenizer: Any) -> Any:
    """A reward model with another tokenizer, shaped like one TRL's PPO can call on policy token ids.

    TRL's `get_reward` runs `getattr(model, model.base_model_prefix)(input_ids=…)`, then `model.score(hidden)`,
    and reads the score at each sequence's last token. Here the "backbone" decodes the policy's ids to text,
    scores that text with the real reward model and its own tokenizer, and returns the score at every position."""
    from types import SimpleNamespace

    import torch

    class RetokenizingReward(torch.nn.Module):
        base_model_prefix = "backbone"

        def __init__(self) -> None:
            super().__init__()
            self.reward = scorer.model  # a submodule, so .to()/.eval()/dropout handling reach it

        def backbone(self, input_ids: Any, **_: Any) -> Any:
            texts = policy_tokenizer.batch_decode(input_ids, skip_special_tokens=True)
            scores = torch.tensor(scorer(texts, [""] * len(texts)), device=input_ids.device)
            return SimpleNamespace(hidden_states=[scores[:, None, None].expand(*input_ids.shape, 1)])

        def score(self, hidden: Any) -> Any:
            return hidden

    return RetokenizingReward()
