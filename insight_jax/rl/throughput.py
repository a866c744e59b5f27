"""Throughput of an RL step: generated tokens per second, model FLOPs per second and MFU.

Model FLOPs (the useful matmul work, `TransformerConfig.forward_flops_per_token`, whose attention
term grows with the causal context) of a step with B sequences of P prompt and C completion
tokens:

    rollout  = B/K * sum_{i<P} f(i+1)  +  B * sum_{t<C} f(P+t+1)        (prefill, then decode)
    learner  = (3 E + R) * B * sum_{i<P+C} f(i+1)                       (E PPO epochs of forward
                                                                         + backward = 3 forwards,
                                                                         R = 1 reference forward
                                                                         with a KL term, else 0)

with K samples per prompt and f(c) the FLOPs of one token attending to c keys. Summing f over
the causal positions is done in closed form: f is affine in c, so sum_{i<n} f(a+i+1) = n f(a +
(n+1)/2). MFU = model FLOPs / (time x devices x the chip's peak dense bf16 FLOP/s); peak rates
are the vendors' published figures, and MFU is left out for a chip not in the table (CPUs).
"""

from __future__ import annotations

from insight_jax.models.transformer import TransformerConfig

# Peak dense bf16 FLOP/s per chip, from the vendors' spec pages (Cloud TPU system architecture:
# v4 275 TFLOP/s, v5e 197, v5p 459, v6e 918; NVIDIA: A100 312, H100 / H200 SXM 989), keyed by a
# substring of jax's device_kind.
PEAK_BF16_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,  # "TPU v5" without "lite" is v5p
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "A100": 312e12,
    "H100": 989e12,
    "H200": 989e12,
}


def peak_flops(device_kind: str) -> float | None:
    """The chip's peak dense bf16 FLOP/s, or None when unknown (the first key found in it)."""
    for key, value in PEAK_BF16_FLOPS.items():
        if key in device_kind:
            return value
    return None


def causal_flops(cfg: TransformerConfig, start: int, n: int) -> float:
    """sum_{i<n} f(start + i + 1): n tokens after `start` earlier ones, each attending to all
    before it and itself (f affine in the context, so n f(start + (n + 1) / 2))."""
    return n * cfg.forward_flops_per_token(start + (n + 1) / 2)


def rl_step_flops(
    cfg: TransformerConfig,
    *,
    num_sequences: int,
    num_samples: int,
    prompt_len: float,
    completion_len: float,
    ppo_epochs: int,
    reference_forward: bool,
) -> tuple[float, float]:
    """(rollout, learner) model FLOPs of one RL step (module docstring)."""
    p, c = prompt_len, completion_len
    prefill = num_sequences / num_samples * causal_flops(cfg, 0, p)
    decode = num_sequences * causal_flops(cfg, p, c)
    passes = 3 * ppo_epochs + (1 if reference_forward else 0)
    return prefill + decode, passes * num_sequences * causal_flops(cfg, 0, p + c)
