"""The simulation loop: the real selector driving the synthetic learner of model.py.

One run (`simulate`) is a `lax.scan` over training steps; `simulate_seeds` runs many seeds at
once. Each step t, with keys derived from (seed, t) only (`step_keys`):

  1. select M prompts with the REAL selector: `select_batch` (registry scorer, Mhat candidates or
     the whole pool), reading cached scores (`init_scores` / `rescore`) for deterministic
     scorers; or, for method "ds", DAPO dynamic sampling (below);
  2. observe the chosen prompts' drift and roll out K Bernoulli(p_i) responses each;
  3. GRPO-like skill update from the groups' reward std (model.py); with
     `SimConfig.memorisation`, the trained prompts' memorised logits and exposures too, and the
     skill update uses only the transferable share of each group's signal (model.py);
  4. conjugate belief update of the M prompts with `apply_update` (decay = lambda), then rescore;
  5. record the exact held-out accuracy, rollouts used and the share of zero-variance groups
     (and, with memorisation, the exact train-pool accuracy: O(N) per step).

Memorisation adds two [N] arrays to the state (m, G) and touches only the M rolled-out rows per
step; with `memorisation=False` (the default) they do not exist and the program is the one
without them. `memorisation=True` with `SimParams.memorise = 0` gives the same outputs bit for
bit (tests/test_sim.py), plus the train-pool accuracy.

DAPO dynamic sampling ("ds"). Draw R*M distinct prompts uniformly (`draw_candidates`), roll out
all of them with the current policy (same policy for every round, as in DAPO, where the update
waits until the batch is full), and keep the first M informative groups (0 < S < K) in draw
order. Rounds are consumed one M-group at a time until M informative groups are found or R
rounds are used (`model.ds_keep`); rollouts used = rounds_used * M * K, so the extra rollouts
are (rounds_used - 1) * M * K. If fewer than M informative groups turn up in R rounds the step
trains on those found (the rest count as zero signal). R is capped at N // M so the R*M draws
stay distinct.

Batching over seeds. `draw_candidates` contains a `lax.cond`; under `jax.vmap` with per-seed keys
it becomes a select that evaluates its O(N) fallback branch every step (measured on 2 CPU cores:
draw_candidates(N = 1e6, Mhat = 4096) takes 3.5 s vmapped over 8 keys, 5 ms for one key). So
`simulate_seeds` / `simulate_many` use `lax.map` (sequential runs, real cond) whenever the
candidate draw takes that path, and `jax.vmap` otherwise; the results are the same either way
(tests/test_sim.py).

Reproducibility: a run is a pure function of (SimConfig, SimParams, seed). The pool and
held-out set depend on the seed and params only, so all methods of one seed see the same pool
(paired comparisons).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from insight_jax.selection import (
    SCORER_NAMES,
    Beliefs,
    apply_update,
    draw_candidates,
    get_scorer,
    init_beliefs,
    init_scores,
    rescore,
    select_batch,
)
from insight_jax.sim import model

METHODS = (*SCORER_NAMES, "ds")
Batching = Literal["auto", "vmap", "map"]


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Shapes and code paths of a run (static under jit; hashable)."""

    method: str = "insight"  # a registered scorer (SCORER_NAMES) or "ds"
    num_prompts: int = 10_000  # N, the training pool
    batch_size: int = 32  # M prompts per step
    num_rollouts: int = 8  # K rollouts per prompt
    num_candidates: int = 512  # Mhat (>= N: the whole pool; paper: 16 M); unused by "ds"
    num_steps: int = 400  # T
    num_clusters: int = 8  # C topics
    num_heldout: int = 2048  # H held-out prompts
    # Bound scorer parameters, e.g. (("eta", 3.0), ("mu", 0.3)); registry defaults otherwise.
    scorer_params: tuple[tuple[str, float], ...] = ()
    ds_max_rounds: int = 8  # R, DAPO's max generation rounds per step
    signal: model.Signal = "std"  # "std" (GRPO) or "var" (Dr. GRPO)
    cache_scores: bool = True  # deterministic scorers: init_scores once, rescore M per step
    alpha0: float = 1.0  # Beta prior of the beliefs
    beta0: float = 1.0
    record_batches: bool = False  # also return the per-step indices and successes
    # Per-prompt memorisation (model.py; SimParams.memorise, memory_rate) and train-pool accuracy.
    memorisation: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        if not 1 <= self.batch_size <= self.num_prompts:
            raise ValueError(f"batch_size must be in [1, N={self.num_prompts}]")
        if self.method != "ds" and self.num_candidates < self.batch_size:
            raise ValueError("num_candidates (Mhat) must be >= batch_size (M)")
        if self.num_steps < 1 or self.num_clusters < 1 or self.num_heldout < 1:
            raise ValueError("num_steps, num_clusters and num_heldout must be positive")
        if self.ds_max_rounds < 1:
            raise ValueError("ds_max_rounds must be >= 1")
        if self.signal not in ("std", "var"):
            raise ValueError(f"signal must be 'std' or 'var', got {self.signal!r}")
        if self.method == "ds" and self.scorer_params:
            raise ValueError("method 'ds' takes no scorer_params")
        _ = self.scorer  # get_scorer checks K and the scorer parameters here, not at trace time

    @property
    def scorer(self):
        """The registry scorer of this method (None for "ds")."""
        if self.method == "ds":
            return None
        return get_scorer(self.method, num_rollouts=self.num_rollouts, **dict(self.scorer_params))

    @property
    def ds_rounds(self) -> int:
        """R, capped so that R * M distinct prompts exist."""
        return max(1, min(self.ds_max_rounds, self.num_prompts // self.batch_size))

    @property
    def groups_per_step(self) -> int:
        """Groups rolled out (at most) per step: M, or R * M for "ds"."""
        return self.ds_rounds * self.batch_size if self.method == "ds" else self.batch_size

    @property
    def uses_cache(self) -> bool:
        return self.method != "ds" and self.cache_scores and self.scorer.deterministic

    @property
    def vmap_safe(self) -> bool:
        """False if draw_candidates takes its lax.cond path (Mhat <= N / 4), which vmap turns
        into an O(N) select (module docstring)."""
        if self.method == "ds":
            draws = self.groups_per_step
        elif self.num_candidates >= self.num_prompts:
            return True  # whole pool: no candidate draw
        else:
            draws = self.num_candidates
        return 4 * draws > self.num_prompts


@struct.dataclass
class SimState:
    skill: jax.Array  # [C]
    beliefs: Beliefs
    scores: jax.Array | None  # cached scores of a deterministic scorer, else None
    pool: model.Pool
    memory: jax.Array | None = None  # [N] memorised logit m_i (memorisation), else None
    exposure: jax.Array | None = None  # [N] training exposure G_i (memorisation), else None


@struct.dataclass
class SimResult:
    """Per-run outputs (leading [seeds] axis from simulate_seeds)."""

    accuracy: jax.Array  # [T + 1] held-out accuracy after t steps (t = 0 .. T)
    rollouts: jax.Array  # [T] int32 rollouts generated at step t (M K, or rounds * M K)
    zero_var_frac: jax.Array  # [T] share of rolled-out groups with S in {0, K}
    signal: jax.Array  # [T] (1/M) sum of trained groups' signal g_i
    skill: jax.Array  # [C] final skill per topic
    indices: jax.Array | None = None  # [T, G] rolled-out prompts (record_batches)
    successes: jax.Array | None = None  # [T, G] their success counts (record_batches)
    train_accuracy: jax.Array | None = None  # [T + 1] train-pool accuracy (memorisation)


def run_keys(seed: jax.Array | int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(pool key, held-out key, run key) of a seed."""
    key = jax.random.key(seed)
    return tuple(jax.random.fold_in(key, i) for i in range(3))


def step_keys(seed: jax.Array | int, step: jax.Array | int) -> tuple[jax.Array, ...]:
    """(selection, drift, rollout) keys of step t: fold_in(run key, t), split in three."""
    return tuple(jax.random.split(jax.random.fold_in(run_keys(seed)[2], step), 3))


def _select(config: SimConfig, key: jax.Array, state: SimState) -> jax.Array:
    if config.method == "ds":
        return draw_candidates(key, config.num_prompts, config.groups_per_step)
    return select_batch(
        key,
        state.beliefs,
        config.batch_size,
        config.num_candidates,
        config.scorer,
        scores=state.scores,
        shard=None,  # under jit select_batch cannot infer the sharding; the sim is unsharded
    )


def _observe(config, params, key, pool: model.Pool, idx, step):
    """Advance the lazily sampled drift of the rolled-out prompts to `step`; their difficulty."""
    x = model.drift_offsets(
        key, pool.offset[idx], step - pool.last_step[idx], params.drift_std, params.drift_rate
    )
    pool = pool.replace(
        offset=pool.offset.at[idx].set(x, unique_indices=True),
        last_step=pool.last_step.at[idx].set(step, unique_indices=True),
    )
    return pool, pool.difficulty[idx] + x


def _step(config: SimConfig, params: model.SimParams, heldout: model.Pool, seed, state, step):
    m, k = config.batch_size, config.num_rollouts
    k_sel, k_drift, k_roll = step_keys(seed, step)
    idx = _select(config, k_sel, state)
    pool, difficulty = _observe(config, params, k_drift, state.pool, idx, step)
    cluster = pool.cluster[idx]
    memory, exposure = state.memory, state.exposure
    if config.memorisation:
        difficulty = difficulty - memory[idx]  # s_c - d - x + m
    successes = model.rollout_successes(
        k_roll, model.success_prob(state.skill, cluster, difficulty), k
    )
    signal = model.group_signal(successes, k, config.signal)
    informative = (successes > 0) & (successes < k)
    beliefs, scores = state.beliefs, state.scores
    if config.method == "ds":
        keep, rounds = model.ds_keep(informative, m)
        signal = jnp.where(keep, signal, 0.0)
        rolled = rounds * m
        in_used_rounds = jnp.arange(idx.shape[0]) < rolled
        zero_var = 1.0 - jnp.sum(informative & in_used_rounds) / rolled
    else:
        rounds = jnp.int32(1)
        zero_var = 1.0 - jnp.mean(informative)
        beliefs = apply_update(beliefs, idx, successes, k, params.decay)
        if scores is not None:
            scores = rescore(scores, beliefs, idx, config.scorer, shard=None)
    trained = signal  # what the skill learns from: g_i, or its transferable share w_i g_i
    if config.memorisation:
        share, mem, exp = model.memory_step(
            memory[idx], exposure[idx], signal, params.memorise, params.memory_rate
        )
        memory = memory.at[idx].set(mem, unique_indices=True)
        exposure = exposure.at[idx].set(exp, unique_indices=True)
        trained = share * signal
    skill = state.skill + model.skill_increment(
        trained, cluster, config.num_clusters, m, params.learning_rate, params.transfer
    )
    out = dict(
        accuracy=model.heldout_accuracy(skill, heldout),
        rollouts=(rounds * m * k).astype(jnp.int32),
        zero_var_frac=zero_var.astype(jnp.float32),
        signal=jnp.sum(signal) / m,
    )
    if config.record_batches:
        out.update(indices=idx, successes=successes)
    if config.memorisation:
        out.update(train_accuracy=model.train_accuracy(skill, pool, memory))
    return SimState(skill, beliefs, scores, pool, memory, exposure), out


def _simulate(config: SimConfig, params: model.SimParams, seed) -> SimResult:
    params = model.as_arrays(params)
    k_pool, k_held, _ = run_keys(seed)
    n, c = config.num_prompts, config.num_clusters
    pool = model.make_pool(k_pool, n, c, params)
    heldout = model.make_pool(k_held, config.num_heldout, c, params)
    beliefs = init_beliefs(n, config.alpha0, config.beta0)
    scores = init_scores(beliefs, config.scorer) if config.uses_cache else None
    state = SimState(jnp.zeros((c,), jnp.float32), beliefs, scores, pool)
    train_acc0 = None
    if config.memorisation:
        zeros = jnp.zeros((n,), jnp.float32)
        state = state.replace(memory=zeros, exposure=zeros)
        train_acc0 = model.train_accuracy(state.skill, pool, zeros)
    acc0 = model.heldout_accuracy(state.skill, heldout)
    body = functools.partial(_step, config, params, heldout, seed)
    state, out = lax.scan(body, state, jnp.arange(config.num_steps, dtype=jnp.int32))
    if train_acc0 is not None:
        train_acc0 = jnp.concatenate([train_acc0[None], out["train_accuracy"]])
    return SimResult(
        accuracy=jnp.concatenate([acc0[None], out["accuracy"]]),
        rollouts=out["rollouts"],
        zero_var_frac=out["zero_var_frac"],
        signal=out["signal"],
        skill=state.skill,
        indices=out.get("indices"),
        successes=out.get("successes"),
        train_accuracy=train_acc0,
    )


def _check_memorisation(config: SimConfig, params: Sequence[model.SimParams]) -> None:
    """memorise > 0 without SimConfig.memorisation would be silently ignored: refuse it."""
    if config.memorisation:
        return
    for p in params:
        kappa = p.memorise
        if isinstance(kappa, jax.core.Tracer):
            continue  # traced: cannot be checked here
        if np.any(np.asarray(kappa) != 0):
            raise ValueError("SimParams.memorise != 0 needs SimConfig(memorisation=True)")


@functools.partial(jax.jit, static_argnames=("config",))
def _simulate_jit(config, params, seed):
    return _simulate(config, params, seed)


def simulate(config: SimConfig, params: model.SimParams, seed: jax.Array | int) -> SimResult:
    """One run: T steps of selection, rollouts and updates (module docstring); jitted."""
    _check_memorisation(config, [params])
    return _simulate_jit(config, params, seed)


@functools.partial(jax.jit, static_argnames=("config", "batching"))
def _simulate_many(config, params, seeds, batching):
    """Runs for a batch of (params, seed) pairs: params leaves and seeds have a leading [B]."""
    run = functools.partial(_simulate, config)
    if batching == "vmap":
        return jax.vmap(run)(params, seeds)
    return lax.map(lambda ps: run(*ps), (params, seeds))


def resolve_batching(config: SimConfig, batching: Batching = "auto") -> str:
    """ "vmap" or "map": "auto" picks vmap unless the candidate draw has a data-dependent cond."""
    if batching not in ("auto", "vmap", "map"):
        raise ValueError(f"batching must be 'auto', 'vmap' or 'map', got {batching!r}")
    if batching == "auto":
        return "vmap" if config.vmap_safe else "map"
    return batching


def simulate_many(
    config: SimConfig,
    params: Sequence[model.SimParams],
    seeds,
    batching: Batching = "auto",
) -> SimResult:
    """Every (params, seed) combination in one compiled call; fields get leading [P, S] axes.

    All params must have mixtures with the same number of components. Identical to calling
    `simulate(config, params[i], seeds[j])` for each pair.
    """
    _check_memorisation(config, params)
    seeds = jnp.asarray(seeds, jnp.int32).reshape(-1)
    arrays = [model.as_arrays(p) for p in params]
    num_params, num_seeds = len(arrays), seeds.shape[0]
    stacked = jax.tree.map(lambda *xs: jnp.repeat(jnp.stack(xs), num_seeds, axis=0), *arrays)
    out = _simulate_many(
        config, stacked, jnp.tile(seeds, num_params), resolve_batching(config, batching)
    )
    return jax.tree.map(lambda x: x.reshape(num_params, num_seeds, *x.shape[1:]), out)


def simulate_seeds(
    config: SimConfig, params: model.SimParams, seeds, batching: Batching = "auto"
) -> SimResult:
    """Runs for each seed in `seeds`; every SimResult field gets a leading [num_seeds] axis.
    Identical to [simulate(config, params, s) for s in seeds], stacked."""
    out = simulate_many(config, [params], seeds, batching)
    return jax.tree.map(lambda x: x[0], out)
