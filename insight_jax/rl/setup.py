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
from insight_jax.models.transformer import Transformer
from insight_jax.rl import grpo as grpo_lib
from insight_jax.rl.data import load_data
from insight_jax.rl.evaluate import EvalSet
from insight_jax.rl.policy import Policy, initial_model_state, policy_from_config
from insight_jax.rl.rollout import RolloutEngine, SamplingSettings, make_rollout_engine
from insight_jax.rl.state import TrainState
from insight_jax.rl.steps import StepFns, StepSettings, make_step_fns, train_state_shardings
from insight_jax.rl.validate import ConfigError, as_rules
from insight_jax.selection import Scorer, get_scorer, init_beliefs, init_scores, pool_shard
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
    eval_sets: tuple[EvalSet, ...]  # held-out sets, each with its task
    num_items: int  # the RL pool: the first num_items prompts of `pool`
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


def _prompt_len(c, policy: Policy, task: Task, pool, eval_sets) -> int:
    """task.max_prompt_len, or the longest prompt (BOS included) of the pool and the held-out
    sets. Every prompt is measured, so one longer than a fixed max_prompt_len is a config
    error before any step rather than a failure mid-run (about a minute for 2e5 chat-templated
    prompts on one core; a progress bar shows for large pools)."""
    fixed = c.task.max_prompt_len
    longest, where = 0, ""
    groups = [("train", task, pool), *((s.name, s.task, s.records) for s in eval_sets)]
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


def build(config: ml_collections.ConfigDict, workdir: str | Path) -> Components:
    """Builds every component of the run `config` describes (the config is validated already)."""
    c = config
    workdir = Path(workdir).resolve()  # orbax needs absolute paths
    policy = policy_from_config(c)
    tokenizer = policy.tokenizer
    task = get_task(c.task.name, **to_dict(c.task.kwargs))
    pool, num_train, eval_sets = load_data(c, task, workdir)
    num_items = c.task.rl_pool_size or num_train
    prompt_len = _prompt_len(c, policy, task, pool, eval_sets)
    if prompt_len + c.rl.max_new_tokens > policy.model_config.max_seq_len:
        raise ConfigError(
            "rl.max_new_tokens",
            c.rl.max_new_tokens,
            f"prompts of up to {prompt_len} tokens plus the response must fit the model's "
            f"{policy.model_config.max_seq_len} positions",
        )
    rules = as_rules(c.mesh.rules)  # tuples, also when read back from config.json
    mesh = shd.make_mesh(tuple(c.mesh.shape), tuple(c.mesh.axes))
    model_config = policy.model_config
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

    abstract_state = jax.eval_shape(init, None)
    state_sh = train_state_shardings(abstract_state, model_sh, sft_opt, mesh, pool_sharding)
    shard = pool_shard(
        jax.ShapeDtypeStruct(abstract_state.scores.shape, jnp.float32, sharding=pool_sharding)
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
        success_threshold=float(sel.success_threshold),
        temperature=float(rl.temperature),
        grpo=grpo,
    )
    fns = make_step_fns(graphdef, state_sh, mesh, rules, sft_opt, rl_opt, scorer, shard, settings)
    common = dict(eos_ids=tokenizer.eos_ids, pad_id=tokenizer.pad_id)
    rollout_engine = make_rollout_engine(
        rl.rollout_engine,
        graphdef,
        SamplingSettings(
            max_new_tokens=rl.max_new_tokens,
            num_samples=rl.num_rollouts,
            temperature=rl.temperature,
            top_p=rl.top_p,
            **common,
        ),
        mesh,
        rules,
    )
    eval_engine = make_rollout_engine(
        rl.rollout_engine,
        graphdef,
        SamplingSettings(
            max_new_tokens=rl.max_new_tokens,
            num_samples=c.eval.num_samples,
            temperature=c.eval.temperature,
            top_p=c.eval.top_p,
            **common,
        ),
        mesh,
        rules,
    )
    # The loaded weights are donated: the state's model reuses their buffers.
    jitted_init = jax.jit(init, out_shardings=state_sh, donate_argnums=0)
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
        prompt_len=prompt_len,
        mesh=mesh,
        rules=rules,
        graphdef=graphdef,
        state_shardings=state_sh,
        scorer=scorer,
        rollout_engine=rollout_engine,
        eval_engine=eval_engine,
        fns=fns,
        init=lambda: jitted_init(initial_model_state(policy, mesh, rules)),
        abstract_state=jax.eval_shape(jitted_init, None if policy.path is None else abstract_model),
    )
