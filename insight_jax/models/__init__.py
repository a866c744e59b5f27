"""Policies (decoder-only transformers) and tokenizers; Hugging Face checkpoints in
``insight_jax.models.hf`` (load_hf_model, save_hf_model)."""

from insight_jax.models.tokenizers import (
    CharTokenizer,
    Tokenizer,
    decode_batch,
    encode_batch,
    format_prompt,
    load_hf_tokenizer,
    padding_mask,
)
from insight_jax.models.transformer import (
    KVCache,
    Transformer,
    TransformerConfig,
    init_cache,
    token_logprobs,
)

__all__ = [
    "CharTokenizer",
    "KVCache",
    "Tokenizer",
    "Transformer",
    "TransformerConfig",
    "decode_batch",
    "encode_batch",
    "format_prompt",
    "init_cache",
    "load_hf_tokenizer",
    "padding_mask",
    "token_logprobs",
]
