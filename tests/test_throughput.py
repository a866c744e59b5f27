"""Throughput metrics: model FLOPs of an RL step against explicit per-token sums, the peak-rate
table, and the metrics an RL step reports."""

import pytest

from configs import arithmetic_tiny
from insight_jax.models.transformer import TransformerConfig
from insight_jax.rl import setup, warmstart
from insight_jax.rl.rl_step import rl_step
from insight_jax.rl.throughput import causal_flops, peak_flops, rl_step_flops

CFG = TransformerConfig.preset("tiny", vocab_size=97, num_layers=3, embed_dim=48, mlp_dim=80)


def _explicit(start: int, n: int) -> float:
    """Each token's FLOPs with its own causal context, summed one by one."""
    return sum(CFG.forward_flops_per_token(start + i + 1) for i in range(n))


@pytest.mark.parametrize(("start", "n"), [(0, 1), (0, 17), (9, 5), (64, 200)])
def test_causal_sum_in_closed_form(start, n):
    assert causal_flops(CFG, start, n) == pytest.approx(_explicit(start, n), rel=1e-12)


def test_rl_step_flops_is_prefill_decode_and_learner_passes():
    p, c, b, k = 11, 7, 24, 4
    rollout, learner = rl_step_flops(
        CFG, num_sequences=b, num_samples=k, prompt_len=p, completion_len=c, ppo_epochs=2,
        reference_forward=True,
    )  # fmt: skip
    assert rollout == pytest.approx(b / k * _explicit(0, p) + b * _explicit(p, c))
    assert learner == pytest.approx((3 * 2 + 1) * b * _explicit(0, p + c))


def test_peak_rates():
    assert peak_flops("TPU v5 lite") == 197e12 and peak_flops("TPU v5p") == 459e12
    assert peak_flops("TPU v4") == 275e12 and peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("cpu") is None


def test_an_rl_step_reports_throughput(tmp_path, devices):
    config = arithmetic_tiny.get_config("smoke")
    comps = setup.build(config, tmp_path)
    state = comps.init()
    for _ in range(config.warmstart.steps):
        state, _ = warmstart.warm_start_step(comps, state)
    state = comps.fns.start_rl(state)
    _, m = rl_step(comps, state)
    assert m["time_rollout_tokens_per_s"] > 0 and m["time_step_tflops_per_s"] > 0
    assert (
        1 <= m["prompt_len"] <= comps.prompt_len and "time_step_mfu" not in m
    )  # no peak for a CPU
