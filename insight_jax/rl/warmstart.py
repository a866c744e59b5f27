"""The supervised warm start (teacher-forced reference solutions) and its shared cache.

A tiny policy starts RL solving nothing; steps [0, W) train it on the task's reference
completions of random pool prompts, so RL starts where part of the pool is solvable.

The cache: the warm start is a pure function of seed, task, model, mesh and its own settings,
so runs that differ only in RL or selection settings (a sweep) can share one warm-started policy
(`warmstart.cache_dir`). An entry holds only what the warm start determines (model, optimizer,
key, step); beliefs and scores stay the run's own prior.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from insight_jax.checkpointing import Checkpointer, CheckpointError
from insight_jax.models.tokenizers import encode_batch
from insight_jax.rl.host_data import local_rows, process_0_says, to_global
from insight_jax.rl.setup import Components, to_dict
from insight_jax.rl.state import TrainState


def warm_start_batch(comps: Components, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Tokens, attention mask and loss mask of [prompt | reference completion | EOS] rows,
    left-padded to prompt_len + max_new_tokens.

    Prompt and completion are encoded separately and their ids concatenated, so the prompt is
    tokenised exactly as in a rollout (a subword tokenizer could otherwise merge across the
    boundary) and the loss covers exactly the completion's tokens and the EOS.
    """
    c, task, tok = comps.config, comps.task, comps.tokenizer
    records = [comps.warm_pool[int(i)] for i in indices]
    length = comps.prompt_len + c.rl.max_new_tokens
    prompts, prompt_lengths = encode_batch(tok, [comps.prompt(r) for r in records])
    completions = tok.encode_many([task.reference_completion(r) for r in records])
    tokens = np.full((len(records), length), tok.pad_id, np.int32)
    mask = np.zeros((len(records), length), bool)
    loss_mask = np.zeros((len(records), length - 1), bool)
    for b, (row, n, completion) in enumerate(
        zip(prompts, prompt_lengths, completions, strict=True)
    ):
        ids = [*row[len(row) - n :], *completion, tok.eos_id]  # the policy must learn to stop
        if len(ids) > length:
            raise ValueError(
                f"warm-start row of pool prompt {int(indices[b])} has {len(ids)} tokens > "
                f"prompt_len + max_new_tokens = {length}; raise rl.max_new_tokens"
            )
        tokens[b, length - len(ids) :] = ids
        mask[b, length - len(ids) :] = True
        # loss_mask[j] covers target j + 1: the completion (incl. EOS) is the last columns.
        loss_mask[b, length - 1 - (len(completion) + 1) :] = True
    return {"tokens": tokens, "mask": mask, "loss_mask": loss_mask}


def warm_start_step(comps: Components, state: TrainState) -> tuple[TrainState, dict]:
    """One supervised step on a random batch of warm-start prompts; metrics as device arrays."""
    fns = comps.fns
    indices = jax.device_get(fns.warm_indices(state))
    rows = local_rows(comps.data_sharding, len(indices))  # this process builds its own rows
    batch = {
        name: to_global(x, rows, comps.data_sharding, len(indices))
        for name, x in warm_start_batch(comps, indices[rows]).items()
    }
    return fns.sft_step(state, batch)


# ------------------------------------------------------------------------------------- cache


def cache_dir(comps: Components) -> Path | None:
    """The cache directory of this run's warm-started policy, or None (no cache/warm start).

    Keyed by a hash of every setting the warm start depends on, so a run never picks up a
    policy trained under different settings.
    """
    c = comps.config
    if not c.warmstart.cache_dir or not comps.warm_steps:
        return None
    ws = {k: v for k, v in to_dict(c.warmstart).items() if k != "cache_dir"}
    key = {
        "seed": c.seed,
        # Not rl_pool_size (RL's sub-pool), num_test / eval_paths (the held-out sets) nor
        # pool_dir (where pools are cached): the warm start depends on none of them.
        "task": {
            k: v
            for k, v in to_dict(c.task).items()
            if k not in ("rl_pool_size", "num_test", "eval_paths", "pool_dir")
        },
        "model": to_dict(c.model),
        "checkpoint": comps.policy.fingerprint(),  # the weights at model.path, if any
        "mesh": [list(c.mesh.shape), list(c.mesh.axes), jax.device_count()],
        "warmstart": ws,
        "sequence": [comps.prompt_len, c.rl.max_new_tokens],
        "optimizer": [c.rl.weight_decay, c.rl.grad_clip],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    name = f"{c.task.name}-s{c.seed}-w{comps.warm_steps}-{digest[:12]}"
    return Path(c.warmstart.cache_dir).resolve() / name


def _part(state: TrainState) -> dict:
    """The leaves the warm start determines (beliefs and scores depend on the RL settings)."""
    return {"model": state.model, "opt": state.opt, "rng": state.rng, "step": state.step}


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def load(directory: Path, warm_steps: int, state: TrainState) -> TrainState | None:
    """`state` with its warm-start leaves replaced by the cached ones, or None (no entry)."""
    if not process_0_says((directory / "checkpoints").exists()):
        return None
    try:
        with Checkpointer(directory / "checkpoints", max_to_keep=1) as cache:
            cached = cache.restore_latest(_part(state))  # its arrays give the layout
    except CheckpointError as e:  # a damaged entry: moved aside, this run warm starts itself
        aside = directory.with_name(f"{directory.name}.damaged-{time.time_ns()}")
        if jax.process_index() == 0:
            print(f"warm-start cache entry {directory} is damaged, moving it to {aside}: {e}")
            try:
                directory.rename(aside)  # so this run's warm start can write the entry again
            except OSError:
                pass  # another run moved it first
        _sync("warm-start cache entry moved aside")
        return None
    if cached is None or cached[0] != warm_steps:
        return None
    return state.replace(**cached[1])


def save(directory: Path, step: int, state: TrainState, workdir: Path) -> None:
    """Adds the warm-started state to the shared cache (first writer wins; never fatal).

    The run writes a temporary entry named for its workdir (one name on all of its processes,
    another for every other run), then process 0 renames it into place."""
    if process_0_says((directory / "checkpoints").exists()):
        return
    run = hashlib.sha256(str(Path(workdir).resolve()).encode()).hexdigest()[:16]
    tmp = directory.with_name(f"{directory.name}.tmp-{run}")
    if jax.process_index() == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # left by this run when it was killed mid-save
    _sync("warm-start cache temporary entry cleared")
    try:
        with Checkpointer(tmp / "checkpoints", max_to_keep=1) as cache:
            cache.save(step, _part(state), {"step": step}, force=True)
    except OSError as e:  # a read-only or full disk (on every process: a shared folder)
        print(f"warm-start cache not written ({e})", flush=True)
        return
    if jax.process_index() == 0:
        try:
            tmp.rename(directory)  # atomic: readers see a whole cache entry or none
        except OSError as e:  # another run won the race
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"warm-start cache not written ({e})", flush=True)
    _sync("warm-start cache entry written")
