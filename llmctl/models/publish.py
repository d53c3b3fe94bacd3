"""Publishing a deployed model to the Hugging Face Hub: a model card written from the recipe (the chain of
stages, the metrics of the deploy's report, the recipe itself with secrets shown as written) and one atomic
commit of the model folder plus the card. The token is read from HF_TOKEN and only ever handed to
huggingface_hub: it is never logged, written, or put into an error message."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from llmctl.errors import RecipeMismatch

TOKEN_ENV = "HF_TOKEN"
PRIVATE_FILES = ("version.json",)  # the registry's own record: local paths, not for the Hub


def token() -> str:
    value = os.environ.get(TOKEN_ENV, "")
    if not value:
        raise RecipeMismatch(
            "deploy.hub", f"deploy.hub: {TOKEN_ENV} is not set; export a Hugging Face write token (hf_…) as {TOKEN_ENV}"
        )
    return value


def hub_api(secret: str) -> Any:
    """huggingface_hub's client (a function of its own so that tests can hand in a recording one)."""
    from huggingface_hub import HfApi

    return HfApi(token=secret)


def model_card(
    repo_id: str, recipe: dict[str, Any], stages: list[dict[str, str]], metrics: dict[str, Any], backend: str
) -> str:
    """README.md for the Hub: front matter, what produced the model, its metrics, how to load it, the recipe."""
    bases = sorted({s["model"] for s in stages if "/" in s.get("model", "") and not Path(s["model"]).exists()})
    front = {
        "library_name": "gguf" if backend == "gguf" else "transformers",
        "tags": ["llmctl", *sorted({s["type"] for s in stages})],
    }
    if bases:
        front["base_model"] = bases[0]
    chain = " → ".join(f"`{s['name']}` ({s['type']})" for s in stages)
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
        f"Produced by the [llmctl](https://github.com/llmctl/llmctl) recipe `{recipe.get('name', '')}`: {chain}.",
        "",
    ]
    if recipe.get("description"):
        lines += [str(recipe["description"]), ""]
    if metrics:
        lines += ["## Evaluation", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in sorted(metrics.items())] + [""]
    lines += [
        "## Use",
        "",
        "```python",
        *_loading_code(repo_id, backend),
        "```",
        "",
        "## Recipe",
        "",
        "```yaml",
        yaml.safe_dump(recipe, sort_keys=False).strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _loading_code(repo_id: str, backend: str) -> list[str]:
    if backend == "gguf":
        return [
            "# llama.cpp: llama-server -hf " + repo_id + "   ·   Ollama: ollama run hf.co/" + repo_id,
            "# (or download the folder and `ollama create NAME -f Modelfile` in it)",
            "from llama_cpp import Llama",
            "",
            f'model = Llama.from_pretrained("{repo_id}", filename="model.gguf")',
        ]
    if backend == "openvino":
        return [
            "from optimum.intel import OVModelForCausalLM",
            "from transformers import AutoTokenizer",
            "",
            f'model = OVModelForCausalLM.from_pretrained("{repo_id}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
        ]
    return [
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
    ]


def upload(
    folder: Path, repo_id: str, private: bool, revision: str, card: str, message: str, api: Any = None
) -> dict[str, Any]:
    """Create the repository (and branch) if needed and commit `folder` plus the card in one commit."""
    from huggingface_hub import CommitOperationAdd

    secret = token()
    api = api or hub_api(secret)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        operations = [
            CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in PRIVATE_FILES and p.name != "README.md"
        ]
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
        commit = api.create_commit(
            repo_id, operations=operations, commit_message=message, revision=revision, repo_type="model"
        )
    except Exception as err:  # noqa: BLE001 - any client failure becomes one readable line, token-free
        raise RuntimeError(
            f"uploading to the Hugging Face Hub repository {repo_id} failed: "
            f"{type(err).__name__}: {str(err).replace(secret, '***')}"
        ) from None
    return {
        "repo_id": repo_id,
        "revision": revision,
        "private": private,
        "commit": getattr(commit, "oid", None),
        "url": getattr(commit, "commit_url", None),
        "files": len(operations),
    }
