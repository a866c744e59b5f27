"""Jitted step functions of the trainer: supervised warm start and the GRPO update.

Both are pure functions of (model state, optimizer state, batch, key) -> (new states, metrics),
built once per run by `make_step_fns` and jitted with explicit in/out shardings (parameters as
`ShardedModel.shardings` says, batches split over the data axes) and donated states.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from insight_jax.models.transformer import token_logprobs
from insight_jax.rl.grpo import GRPOConfig, grpo_objective


@dataclasses.dataclass(frozen=True)
class StepFns:
    """The compiled step functions of one run."""

    sft_step: Callable[..., Any]  # (state, opt_state, tokens, mask, loss_mask) -> (state, opt, m)
    grpo_step: Callable[..., Any]  # (state, opt_state, batch, key) -> (state, opt, metrics)
    init_sft_opt: Callable[..., Any]  # (state) -> opt_state of the warm-start optimizer
    init_rl_opt: Callable[..., Any]  # (state) -> opt_state of the RL optimizer


def _sft_loss(state, graphdef, tokens, mask, loss_mask):
    """Mean NLL of the completion tokens: -sum(loss_mask * log p) / sum(loss_mask)."""
    model = nnx.merge(graphdef, state)
    lp = token_logprobs(model, tokens, mask)
    denom = jnp.maximum(jnp.sum(loss_mask), 1)
    return -jnp.sum(jnp.where(loss_mask, lp, 0.0)) / denom


def _grpo_minibatch_loss(state, graphdef, mb, grpo: GRPOConfig, temperature: float):
    model = nnx.merge(graphdef, state)
    need_entropy = grpo.entropy_coef != 0.0
    out = token_logprobs(
        model,
        mb["sequences"],
        mb["sequence_mask"],
        temperature=temperature,
        return_entropy=need_entropy,
    )
    lp, ent = out if need_entropy else (out, None)
    return grpo_objective(
        lp, mb["old_logprobs"], mb["advantages"], mb["loss_mask"], grpo, entropy=ent
    )


def opt_state_shardings(optimizer, state_shardings, replicated: NamedSharding):
    """Shardings of `optimizer.init(params)`: every sub-tree shaped like the parameters (Adam's
    mu and nu) is laid out like them, everything else (step counters) is replicated."""
    params_def = jax.tree.structure(state_shardings)
    abstract_params = jax.tree.map(lambda s: jax.ShapeDtypeStruct((), jnp.float32), state_shardings)
    abstract = jax.eval_shape(optimizer.init, abstract_params)

    def is_params(x):
        return jax.tree.structure(x) == params_def

    return jax.tree.map(
        lambda x: state_shardings if is_params(x) else replicated, abstract, is_leaf=is_params
    )


def make_step_fns(
    graphdef: nnx.GraphDef,
    state_shardings: Any,
    mesh: jax.sharding.Mesh,
    batch_axes: tuple[str, ...],
    sft_optimizer: optax.GradientTransformation,
    rl_optimizer: optax.GradientTransformation,
    grpo: GRPOConfig,
    temperature: float,
) -> StepFns:
    """Builds the jitted warm-start step, GRPO step and optimizer init for one run."""
    data = NamedSharding(mesh, P(batch_axes))
    repl = NamedSharding(mesh, P())

    # Both optimizers are the same optax chain with other hyper-parameters, so their states
    # have one structure and one layout (one compiled step, one checkpoint format per phase).
    opt_sh = opt_state_shardings(sft_optimizer, state_shardings, repl)

    def apply(optimizer, state, opt_state, grads):
        updates, opt_state = optimizer.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state

    def sft_step(state, opt_state, tokens, mask, loss_mask):
        loss, grads = jax.value_and_grad(_sft_loss)(state, graphdef, tokens, mask, loss_mask)
        state, opt_state = apply(sft_optimizer, state, opt_state, grads)
        return state, opt_state, {"sft_loss": loss, "grad_norm": optax.tree.norm(grads)}

    def grpo_step(state, opt_state, batch, key):
        """num_ppo_epochs passes over num_minibatches shuffled minibatches of the rollout."""
        rows = batch["advantages"].shape[0]
        size = rows // grpo.num_minibatches
        metrics = []
        for epoch in range(grpo.num_ppo_epochs):
            perm = jax.random.permutation(jax.random.fold_in(key, epoch), rows)
            for i in range(grpo.num_minibatches):
                take = perm[i * size : (i + 1) * size]
                mb = jax.tree.map(lambda x, take=take: x[take], batch)
                (_, aux), grads = jax.value_and_grad(_grpo_minibatch_loss, has_aux=True)(
                    state, graphdef, mb, grpo, temperature
                )
                state, opt_state = apply(rl_optimizer, state, opt_state, grads)
                metrics.append({**aux, "grad_norm": optax.tree.norm(grads)})
        mean = jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *metrics)
        return state, opt_state, mean

    batch_sharding = {
        k: data for k in ("sequences", "sequence_mask", "old_logprobs", "advantages", "loss_mask")
    }
    sft = jax.jit(
        sft_step,
        in_shardings=(state_shardings, opt_sh, data, data, data),
        out_shardings=(state_shardings, opt_sh, repl),
        donate_argnums=(0, 1),
    )
    grpo_jit = jax.jit(
        grpo_step,
        in_shardings=(state_shardings, opt_sh, batch_sharding, repl),
        out_shardings=(state_shardings, opt_sh, repl),
        donate_argnums=(0, 1),
    )
    return StepFns(
        sft_step=sft,
        grpo_step=grpo_jit,
        init_sft_opt=jax.jit(sft_optimizer.init, out_shardings=opt_sh),
        init_rl_opt=jax.jit(rl_optimizer.init, out_shardings=opt_sh),
    )
