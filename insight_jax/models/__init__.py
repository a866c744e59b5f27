"""Policies (decoder-only transformers) and tokenizers."""

from insight_jax.models.tokenizers import (
    CharTokenizer,
    Tokenizer,
    decode_batch,
    encode_batch,
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
    "init_cache",
    "padding_mask",
    "token_logprobs",
]
