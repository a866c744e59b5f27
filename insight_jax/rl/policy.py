"""The policy a config names: its tokenizer, its TransformerConfig, its initial weights and how a
task's prompt text is presented to it.

Two sources, chosen by `config.model.path`:
  * "" (the default): a built-in preset (`model.preset` + `model.overrides`) with random weights
    and the character tokenizer; prompts are the task's plain text.
  * a Hugging Face model folder (config.json, *.safetensors, tokenizer.json): that checkpoint's
    shape and weights (models/hf.py) and tokenizer (models/hf_tokenizer.py); prompts go through
    the tokenizer's chat template when it has one (`model.chat_template`).
Numerics (`model.dtype`, `param_dtype`, `scan_layers`, `remat`, `logits_chunk`) apply to both.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ml_collections

from insight_jax.models import hf
from insight_jax.models.tokenizers import (
    CharTokenizer,
    Tokenizer,
    format_prompt,
    load_hf_tokenizer,
)
from insight_jax.models.transformer import TransformerConfig
from insight_jax.tasks.base import Task

# config.model keys passed to TransformerConfig whatever the source (memory / numerics only).
NUMERIC_KEYS = ("dtype", "param_dtype", "scan_layers", "remat", "logits_chunk")
CHAT_TEMPLATE_MODES = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class Policy:
    tokenizer: Tokenizer
    model_config: TransformerConfig
    path: Path | None  # the HF folder, or None for a preset with random weights
    chat: bool  # prompts rendered with the tokenizer's chat template
    template_vars: dict[str, Any]

    def prompt(self, task: Task, record: dict) -> str:
        """The text the policy is prompted with for `record` of `task`: the task's chat turns
        through the tokenizer's chat template for a chat policy, else its plain-text prompt."""
        if self.chat:
            return format_prompt(
                self.tokenizer, task.chat_prompt(record), chat=True, **self.template_vars
            )
        return format_prompt(self.tokenizer, task.prompt(record), chat=False, **self.template_vars)

    def fingerprint(self) -> dict[str, Any] | None:
        """Identity of the checkpoint's files (name, size, mtime), for cache keys; None for a
        preset (its weights are a function of the seed)."""
        if self.path is None:
            return None
        return {
            "path": str(self.path),
            "files": sorted(
                (f.name, f.stat().st_size, f.stat().st_mtime_ns)
                for f in self.path.iterdir()
                if f.suffix in (".json", ".safetensors", ".jinja")
            ),
        }


def _numerics(model: ml_collections.ConfigDict) -> dict[str, Any]:
    return {k: model[k] for k in NUMERIC_KEYS}


def _check_fits(tokenizer: Tokenizer, model_config: TransformerConfig, where: str) -> None:
    top = max(tokenizer.vocab_size - 1, tokenizer.pad_id, *tokenizer.eos_ids)
    if top >= model_config.vocab_size:
        raise ValueError(
            f"{where}: the tokenizer has ids up to {top} but the model's vocabulary is "
            f"{model_config.vocab_size}"
        )


def policy_from_config(c: ml_collections.ConfigDict) -> Policy:
    """The Policy of `c.model` (reads config.json and the tokenizer files, no weights)."""
    m = c.model
    if not m.path:
        tokenizer = CharTokenizer()
        model_config = TransformerConfig.preset(
            m.preset, vocab_size=tokenizer.vocab_size, **dict(m.overrides), **_numerics(m)
        )
        return Policy(tokenizer, model_config, None, False, {})

    path = Path(m.path).expanduser().resolve()
    model_config = hf.config_from_hf(hf.read_hf_config(path), **_numerics(m))
    tokenizer = load_hf_tokenizer(path)
    _check_fits(tokenizer, model_config, str(path))
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if m.chat_template == "on" and not has_template:
        raise ValueError(f"model.chat_template='on' but {path} has no chat template")
    chat = m.chat_template == "on" or (m.chat_template == "auto" and has_template)
    return Policy(tokenizer, model_config, path, chat, dict(m.template_vars))


def initial_model_state(policy: Policy, mesh, rules):
    """The checkpoint's weights as an nnx.State placed on their shardings, or None for a
    preset (initialised randomly inside the jitted init)."""
    if policy.path is None:
        return None
    _, state = hf.load_hf_state(policy.path, policy.model_config, mesh, rules)
    return state
