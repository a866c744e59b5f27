"""A tiny random Hugging Face model folder: safetensors weights, config.json,
generation_config.json, and a byte-level BPE tokenizer (tokenizer.json, tokenizer_config.json)
with a ChatML-style chat template. For demos and tests of the Hugging Face path on a CPU:
`--config.model.path=DIR` trains it like any downloaded checkpoint.

The command line is launch/make_tiny_hf.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from flax import nnx

from insight_jax.models import hf
from insight_jax.models.transformer import Transformer, TransformerConfig

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# ChatML turns, as Qwen's instruct models use them: "<|im_start|>{role}\n{content}<|im_end|>\n",
# and the assistant's turn opened by add_generation_prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _train_tokenizer(corpus: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return tok


def write_tiny_hf(
    path: str | Path,
    corpus: Iterable[str],
    *,
    vocab_size: int = 512,
    num_layers: int = 2,
    embed_dim: int = 64,
    seed: int = 0,
) -> Path:
    """Writes the folder at `path` and returns it. The tokenizer is trained on `corpus` (e.g. a
    task's prompts and answers) with every byte in its alphabet, so it encodes any text; the
    model is a Qwen3-shaped random decoder (tied embeddings, q/k norm) whose vocabulary is the
    tokenizer's rounded up to a multiple of 8 (checkpoints pad theirs too)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = _train_tokenizer(corpus, vocab_size)
    tok.save(str(path / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "bos_token": None,
                "chat_template": CHAT_TEMPLATE,
                "model_max_length": 2048,
            },
            indent=2,
        )
    )
    heads = max(2, embed_dim // 32)
    config = TransformerConfig(
        vocab_size=-(-tok.get_vocab_size() // 8) * 8,
        num_layers=num_layers,
        embed_dim=embed_dim,
        num_heads=heads,
        num_kv_heads=heads // 2,
        head_dim=32,
        mlp_dim=2 * embed_dim,
        rope_theta=1e6,
        qk_norm=True,
        tie_embeddings=True,
        max_seq_len=2048,
    )
    model = Transformer(config, rngs=nnx.Rngs(seed))
    special = {
        "bos_token_id": None,
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
    }
    hf.save_hf_model(
        model, path, architecture="Qwen3ForCausalLM", hf_config=special, generation_config=special
    )
    return path
