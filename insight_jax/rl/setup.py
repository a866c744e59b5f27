"""The components of a run, built once from its config: task, pools, mesh, model, engines, steps.

`build(config, workdir)` returns a frozen `Components`; its `init()` makes the step-0
TrainState, created sharded (nothing is materialised on one device first). Neither holds or
mutates training state: the loop (train.py) threads TrainState through the step functions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from insight_jax import sharding as shd
from insight_jax.metrics import progress
from insight_jax.models.tokenizers import Tokenizer, encode_batch
from insight_jax.models.transformer import Transformer, TransformerConfig
from insight_jax.rl import grpo as grpo_lib
from insight_jax.rl.data import TRAIN_POOL_SET, load_data, warm_start_pool
from insight_jax.rl.engines import make_rollout_engine
from insight_jax.rl.evaluate import EvalSet
from insight_jax.rl.policy import Policy, initial_model_state, policy_from_config
from insight_jax.rl.rollout import RolloutEngine, SamplingSettings
from insight_jax.rl.state import TrainState
from insight_jax.rl.steps import StepFns, StepSettings, make_step_fns, train_state_shardings
from insight_jax.rl.validate import ConfigError, as_rules
from insight_jax.selection import (
    Scorer,
    Skip,
    get_scorer,
    init_beliefs,
    init_scores,
    pool_shard,
)
from insight_jax.tasks import get_task
from insight_jax.tasks.base import Task


def to_dict(x: Any) -> dict:
    return x.to_dict() if isinstance(x, ml_collections.ConfigDict) else dict(x)


@dataclasses.dataclass(frozen=True)
class Components:
    """What a run builds once from its config (no training state)."""

    config: ml_collections.ConfigDict
    workdir: Path
    policy: Policy
    tokenizer: Tokenizer
    task: Task
    pool: Any  # random access by global index: pool[i] -> record
    num_train: int  # len(pool), N
    # The sets evaluated during training, each with its task: the held-out sets, then (with
    # eval.train_pool_size) a sample of the RL pool, `held_out` False.
    eval_sets: tuple[EvalSet, ...]
    num_items: int  # the RL pool: the first num_items prompts of `pool`
    warm_pool: Any  # the warm start's prompts: `pool`, or problems outside it (warmstart.pool)
    warm_start_disjoint: bool  # no warm-start problem is in the RL pool or a held-out set
    prompt_len: int
    mesh: jax.sharding.Mesh
    rules: shd.LogicalRules
    graphdef: nnx.GraphDef
    state_shardings: TrainState
    scorer: Scorer
    rollout_engine: RolloutEngine
    eval_engine: RolloutEngine
    fns: StepFns
    # () -> TrainState at step 0, born sharded (with model.path: the checkpoint's weights,
    # read when called)
    init: Any
    abstract_state: TrainState  # init()'s shapes, dtypes and shardings (restore targets)

    def prompt(self, record: dict) -> str:
        """The text the policy is prompted with for `record` (chat-templated for chat models)."""
        return self.policy.prompt(self.task, record)

    @property
    def warm_steps(self) -> int:
        return self.config.warmstart.steps

    @property
    def total_steps(self) -> int:
        return self.config.warmstart.steps + self.config.rl.steps

    @property
    def data_sharding(self) -> jax.sharding.NamedSharding:
        """[batch, ...] arrays: the leading dimension over the batch mesh axes."""
        return shd.data_sharding(self.mesh, self.rules)

    @property
    def batch_multiple(self) -> int:
        return shd.batch_size_multiple(self.mesh, self.rules)


def grpo_config(c: ml_collections.ConfigDict) -> grpo_lib.GRPOConfig:
    """The GRPO settings of the config's rl block (every field from the config)."""
    rl = c.rl
    return grpo_lib.GRPOConfig(
        clip_low=rl.clip_low,
        clip_high=rl.clip_high,
        aggregation=rl.aggregation,
        kl_coef=rl.kl_coef,
        kl_kind=rl.kl_kind,
        entropy_coef=rl.entropy_coef,
        normalize_std=rl.normalize_std,
        num_minibatches=rl.num_minibatches,
        num_ppo_epochs=rl.num_ppo_epochs,
    )


def rl_lr_schedule(c: ml_collections.ConfigDict):
    """The RL learning rate as a function of the optimizer's update count.

    Warmup and cosine length are given in RL steps, and a GRPO step makes num_ppo_epochs *
    num_minibatches optimizer updates, so both are scaled by that factor here.
    """
    rl = c.rl
    per_step = rl.num_ppo_epochs * rl.num_minibatches
    return grpo_lib.make_lr_schedule(
        rl.learning_rate,
        warmup_steps=rl.warmup_steps * per_step,
        total_steps=rl.steps * per_step if rl.lr_schedule == "cosine" else None,
    )


def _optimizers(c: ml_collections.ConfigDict):
    opt = dict(weight_decay=c.rl.weight_decay, grad_clip=c.rl.grad_clip)
    return (
        grpo_lib.make_optimizer(c.warmstart.learning_rate, **opt),
        grpo_lib.make_optimizer(rl_lr_schedule(c), **opt),
    )


SCAN_CHUNK = 10_000  # prompts tokenized per call while scanning a pool for its longest


def _prompt_len(c, policy: Policy, task: Task, pool, warm_pool, eval_sets) -> int:
    """task.max_prompt_len, or the longest prompt (BOS included) of the pool, the warm start's
    prompts and the held-out sets. Every prompt is measured, so one longer than a fixed
    max_prompt_len is a config error before any step rather than a failure mid-run (about a
    minute for 2e5 chat-templated prompts on one core; a progress bar shows for large pools)."""
    fixed = c.task.max_prompt_len
    longest, where = 0, ""
    groups = [("train", task, pool), *((s.name, s.task, s.records) for s in eval_sets)]
    if warm_pool is not pool:
        groups.append(("warm-start", task, warm_pool))
    for name, t, records in groups:
        bar = progress(
            len(records),
            f"measuring {name} prompts",
            enabled=len(records) > 5 * SCAN_CHUNK and jax.process_index() == 0,
        )
        for start in range(0, len(records), SCAN_CHUNK):
            chunk = [records[i] for i in range(start, min(start + SCAN_CHUNK, len(records)))]
            lengths = encode_batch(policy.tokenizer, [policy.prompt(t, r) for r in chunk])[1]
            if int(lengths.max()) > longest:
                longest = int(lengths.max())
                where = f"record {start + int(lengths.argmax())} of {name}"
            bar.update(len(chunk))
        bar.close()
    if fixed and longest > fixed:
        raise ConfigError("task.max_prompt_len", fixed, f"{where} has a prompt of {longest} tokens")
    return fixed or longest


@dataclasses.dataclass(frozen=True)
class Steps:
    """The compiled-once parts of a run and their layouts, from shapes alone (no data, no
    weights): what the trainer runs and what launch/aot_check.py compiles for a TPU slice."""

    graphdef: nnx.GraphDef
    abstract_model: nnx.State  # the policy's parameters as ShapeDtypeStructs with shardings
    abstract_state: TrainState  # the step-0 state as ShapeDtypeStructs with shardings
    state_shardings: TrainState
    scorer: Scorer
    fns: StepFns
    rollout_engine: RolloutEngine
    eval_engine: RolloutEngine
    # (model nnx.State | None) -> TrainState at step 0, jitted onto state_shardings; None draws
    # random weights from the seed. The given weights are donated.
    init: Any


def build_steps(
    config: ml_collections.ConfigDict,
    model_config: TransformerConfig,
    mesh: jax.sharding.Mesh,
    rules: shd.LogicalRules,
    *,
    eos_ids: tuple[int, ...],
    pad_id: int,
    num_items: int,
    num_train: int,
) -> Steps:
    """The step functions, rollout engines and state layout of `config` on `mesh`.

    Needs only shapes: the model's config, the tokenizer's stop and pad ids, the RL pool size
    N (`num_items`) and the warm start's pool size (`num_train`). The prompt length is not an
    argument: every step is traced at the shapes of its inputs."""
    c = config
    graphdef, abstract_model, model_sh = shd.abstract_sharded_state(
        Transformer, model_config, mesh, rules
    )
    sel, rl = c.selection, c.rl
    scorer = get_scorer(sel.scorer, num_rollouts=rl.num_rollouts, **to_dict(sel.params[sel.scorer]))
    grpo = grpo_config(c)
    sft_opt, rl_opt = _optimizers(c)
    pool_sharding = shd.logical_to_sharding(("pool",), mesh, rules)

    def init(model: nnx.State | None) -> TrainState:
        if model is None:  # a preset: random weights drawn from the seed
            model = nnx.split(Transformer(model_config, rngs=nnx.Rngs(c.seed)))[1]
        # Padded to a multiple of the shard count; padded slots are never selected.
        beliefs = init_beliefs(num_items, sel.alpha0, sel.beta0, sharding=pool_sharding)
        # Stochastic scorers draw fresh scores every step: their cache stays zeros.
        scores = (
            init_scores(beliefs, scorer) if scorer.deterministic else jnp.zeros_like(beliefs.alpha)
        )
        first_opt = sft_opt if c.warmstart.steps else rl_opt
        return TrainState(
            model=model,
            opt=first_opt.init(model),
            beliefs=beliefs,
            scores=scores,
            ref_model=jax.tree.map(jnp.copy, model) if grpo.kl_coef > 0 else None,
            rng=jax.random.key_data(jax.random.key(c.seed)),
            step=jnp.zeros((), jnp.int32),
        )

    shapes = jax.eval_shape(init, abstract_model)
    state_sh = train_state_shardings(shapes, model_sh, sft_opt, mesh, pool_sharding)
    shard = pool_shard(
        jax.ShapeDtypeStruct(shapes.scores.shape, jnp.float32, sharding=pool_sharding)
    )
    settings = StepSettings(
        batch_size=rl.batch_size,
        num_candidates=min(sel.num_candidates, num_items),
        num_rollouts=rl.num_rollouts,
        num_items=num_items,
        num_train=num_train,
        warm_batch_size=c.warmstart.batch_size,
        dynamic_sampling_rounds=sel.dynamic_sampling_rounds,
        decay=float(sel.decay),
        skip=(
            Skip(sel.skip_threshold, sel.skip_explore, rl.num_rollouts)
            if sel.skip_threshold
            else None
        ),
        success_threshold=float(sel.success_threshold),
        temperature=float(rl.temperature),
        grpo=grpo,
    )
    fns = make_step_fns(graphdef, state_sh, mesh, rules, sft_opt, rl_opt, scorer, shard, settings)

    def engine(num_samples: int, temperature: float, top_p: float) -> RolloutEngine:
        sampling = SamplingSettings(
            max_new_tokens=rl.max_new_tokens,
            num_samples=num_samples,
            temperature=temperature,
            top_p=top_p,
            eos_ids=eos_ids,
            pad_id=pad_id,
        )
        return make_rollout_engine(
            rl.rollout_engine, graphdef, sampling, mesh, rules, num_slots=rl.rollout_slots
        )

    # The loaded weights are donated: the state's model reuses their buffers.
    jitted_init = jax.jit(init, out_shardings=state_sh, donate_argnums=0)
    return Steps(
        graphdef=graphdef,
        abstract_model=abstract_model,
        abstract_state=jax.eval_shape(jitted_init, abstract_model),
        state_shardings=state_sh,
        scorer=scorer,
        fns=fns,
        rollout_engine=engine(rl.num_rollouts, rl.temperature, rl.top_p),
        eval_engine=engine(c.eval.num_samples, c.eval.temperature, c.eval.top_p),
        init=jitted_init,
    )


def build(config: ml_collections.ConfigDict, workdir: str | Path) -> Components:
    """Builds every component of the run `config` describes (the config is validated already)."""
    c = config
    workdir = Path(workdir).resolve()  # orbax needs absolute paths
    policy = policy_from_config(c)
    tokenizer = policy.tokenizer
    task = get_task(c.task.name, **to_dict(c.task.kwargs))
    pool, num_train, eval_sets = load_data(c, task, workdir)
    num_items = c.task.rl_pool_size or num_train
    try:
        warm_pool, disjoint = warm_start_pool(c, task, pool, num_items, eval_sets)
    except ValueError as e:
        raise ConfigError("warmstart.pool_size", c.warmstart.pool_size, str(e)) from None
    if c.eval.train_pool_size:  # the first prompts of the RL pool, a uniform sample of it
        sample = tuple(pool[i] for i in range(c.eval.train_pool_size))
        eval_sets = (*eval_sets, EvalSet(TRAIN_POOL_SET, task, sample, held_out=False))
    prompt_len = _prompt_len(c, policy, task, pool, warm_pool, eval_sets)
    if prompt_len + c.rl.max_new_tokens > policy.model_config.max_seq_len:
        raise ConfigError(
            "rl.max_new_tokens",
            c.rl.max_new_tokens,
            f"prompts of up to {prompt_len} tokens plus the response must fit the model's "
            f"{policy.model_config.max_seq_len} positions",
        )
    rules = as_rules(c.mesh.rules)  # tuples, also when read back from config.json
    mesh = shd.make_mesh(tuple(c.mesh.shape), tuple(c.mesh.axes))
    steps = build_steps(
        c,
        policy.model_config,
        mesh,
        rules,
        eos_ids=tokenizer.eos_ids,
        pad_id=tokenizer.pad_id,
        num_items=num_items,
        num_train=len(warm_pool),
    )
    return Components(
        config=c,
        workdir=workdir,
        policy=policy,
        tokenizer=tokenizer,
        task=task,
        pool=pool,
        num_train=num_train,
        eval_sets=eval_sets,
        num_items=num_items,
        warm_pool=warm_pool,
        warm_start_disjoint=disjoint,
        prompt_len=prompt_len,
        mesh=mesh,
        rules=rules,
        graphdef=steps.graphdef,
        state_shardings=steps.state_shardings,
        scorer=steps.scorer,
        rollout_engine=steps.rollout_engine,
        eval_engine=steps.eval_engine,
        fns=steps.fns,
        init=lambda: steps.init(initial_model_state(policy, mesh, rules)),
        abstract_state=steps.abstract_state,
    )
