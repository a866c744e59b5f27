"""The paper's training and evaluation settings, shared by its five configs (configs/qwen3_*.py,
configs/r1_distill_qwen_7b_deepscaler.py); each sets its model, data and response length.

Settings (../METHOD.md "Paper's training/eval settings", with MoPPS's verl recipes for what the
paper leaves out): GRPO, 100 steps, M = 256 prompts x K = 8 rollouts at T = 1.0, top-p 1.0;
PPO mini-batches of 64 prompts (Countdown) or 128 (math, general) -> 4 or 2 optimizer updates per
step; AdamW lr 1e-6, weight decay 0.1, betas (0.9, 0.999), grad clip 1.0; clip 0.2 / 0.28,
token-mean loss, entropy bonus 0.001, no KL; InSight with Mhat = 16 M candidates, lambda = 1,
eta = 3, mu = 0.3 (the appendix prints mu = 3.0; its own sweep shows 0.3 is meant), prior (1, 1);
no supervised warm start. Held-out avg@16 at T = 0.6, top-p 0.95, every 10 steps. Prompt and
response lengths as MoPPS's recipes: Countdown 256 + 1024 tokens, math 1024 + 8192.

Numerics for real checkpoints: bfloat16 compute, float32 master weights, layers scanned and
rematerialised, log-probs in chunks of 512 positions. Mesh: every device on the "fsdp" axis
(parameters, optimizer state and the batch split over the whole slice); the config names the
slice it was sized for.

Config argument (comma-separated key=value parts, parsed by base_config.parse_arg):
  method=<name> | <name>   a selection method of base_config.METHODS (default insight)
  data_dir=DIR             where the public files are (default data), laid out as
                           insight_jax/tasks/tiny_files.py writes their tiny twins
  model_path=DIR           the Hugging Face checkpoint (default models/<its hub name>)
  smoke                    the seconds-long CPU variant: the tiny Hugging Face model and tiny
                           files of the same formats, written once under smoke_dir
  smoke_dir=DIR            (default /tmp/insight_jax_smoke)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from insight_jax.rl.base_config import (
    DEFAULT_METHOD,
    METHODS,
    Choice,
    get_base_config,
    parse_arg,
    set_method,
)

DEFAULT_SMOKE_DIR = "/tmp/insight_jax_smoke"

# The files each dataset is read from, relative to data_dir (the public files' own names).
COUNTDOWN = "countdown/train-00000-of-00001.parquet"  # Jiayi-Pan/Countdown-Tasks-3to4
DEEPSCALER = "deepscaler/train/deepscaler.json"  # agentica-org/DeepScaleR-Preview-Dataset
DEEPSCALER_EVALS = {  # the DeepScaleR repository's test sets
    "aime24": "deepscaler/test/aime.json",
    "amc23": "deepscaler/test/amc.json",
    "math500": "math500/test.jsonl",  # HuggingFaceH4/MATH-500
    "minerva": "deepscaler/test/minerva.json",
    "olympiad": "deepscaler/test/olympiad_bench.json",
}
WEBINSTRUCT = "webinstruct/train.parquet"  # TIGER-Lab/WebInstruct-verified
GENERAL_EVALS = {  # multiple choice
    "mmlu": "mmlu/test.parquet",  # cais/mmlu, all subjects
    "gpqa": "gpqa/gpqa_diamond.jsonl",  # Idavidrein/gpqa, diamond, one JSON object per row
}


def parse_paper_arg(arg: str | None, model_path: str) -> ml_collections.ConfigDict:
    return parse_arg(
        arg,
        method=Choice(DEFAULT_METHOD, METHODS),
        data_dir="data",
        model_path=model_path,
        smoke=False,
        smoke_dir=DEFAULT_SMOKE_DIR,
    )


def paper_config(
    arg: str | None,
    *,
    model: str,
    task: str,
    train: str,
    evals: Mapping[str, Any],
    prompt_len: int,
    response_len: int,
    minibatch_prompts: int,
    task_kwargs: Mapping[str, Any] | None = None,
    smoke_slices: Mapping[str, str] | None = None,
) -> ml_collections.ConfigDict:
    """The config of one paper run: `model` the hub name (its default folder models/<name>),
    `train` and `evals` paths relative to data_dir (evals: a path, or a mapping with a "task").
    `smoke_slices` replaces the row slices of "train" / eval names for the tiny files."""
    a = parse_paper_arg(arg, f"models/{model.split('/')[-1]}")
    c = get_base_config()
    c.task.name = task
    c.task.kwargs = dict(task_kwargs or {})
    c.task.num_train, c.task.num_test = 0, 0
    c.task.max_prompt_len = prompt_len
    c.model.path = a.model_path
    c.model.dtype, c.model.param_dtype = "bfloat16", "float32"
    c.model.scan_layers, c.model.remat, c.model.logits_chunk = True, "full", 512
    c.mesh.shape, c.mesh.axes = (1, -1, 1), ("data", "fsdp", "tensor")
    c.warmstart.steps = 0

    m, k = 256, 8
    c.rl.steps = 100
    c.rl.batch_size, c.rl.num_rollouts = m, k
    c.rl.max_new_tokens = response_len
    c.rl.temperature, c.rl.top_p = 1.0, 1.0
    c.rl.learning_rate = 1e-6
    c.rl.weight_decay, c.rl.grad_clip = 0.1, 1.0
    c.rl.entropy_coef = 0.001
    c.rl.clip_low, c.rl.clip_high = 0.2, 0.28
    c.rl.aggregation = "token_mean"
    c.rl.kl_coef = 0.0
    c.rl.num_minibatches = m // minibatch_prompts
    # Long, ragged responses: continuous batching (rl/continuous.py) with a quarter of the M K
    # rollouts decoding at once, refilled as rows end; the KV cache is slots x (P + N).
    c.rl.rollout_engine, c.rl.rollout_slots = "continuous", m * k // 4
    c.rl.num_ppo_epochs = 1
    c.selection.num_candidates = 16 * m
    c.selection.decay = 1.0
    c.selection.params.insight.eta, c.selection.params.insight.mu = 3.0, 0.3
    c.selection.alpha0 = c.selection.beta0 = 1.0
    c.eval.every, c.eval.num_samples = 10, 16
    c.eval.temperature, c.eval.top_p = 0.6, 0.95
    c.eval.batch_size = 64
    c.checkpoint.every = 10
    set_method(c, a.method)

    data = Path(a.data_dir)
    if a.smoke:
        from insight_jax.tasks.tiny_files import write_tiny_files

        data = write_tiny_files(Path(a.smoke_dir) / "data")
        c.model.path = str(_tiny_model(Path(a.smoke_dir) / "model", data))
        shrink_paper_for_smoke(c)
        slices = dict(smoke_slices or {})
        train = _reslice(train, slices.get("train"))
        evals = {name: _reslice(spec, slices.get(name)) for name, spec in evals.items()}
    c.task.train_path = _join(data, train)
    c.task.eval_paths = {name: _join(data, spec) for name, spec in evals.items()}
    return c


def _reslice(spec: Any, rows: str | None) -> Any:
    """`spec` with its row slice replaced by `rows` ("[a:b]"; None: unchanged)."""
    if rows is None:
        return spec
    if isinstance(spec, str):
        return spec.split("[")[0] + rows
    return {**spec, "path": spec["path"].split("[")[0] + rows}


def _join(data: Path, spec: Any) -> Any:
    """`spec` (a relative path spec, or a mapping with one under "path") under `data`."""
    if isinstance(spec, str):
        return str(data / spec)
    return {**spec, "path": str(data / spec["path"])}


def shrink_paper_for_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Seconds on a CPU: a few steps of a few prompts, short responses, float32, one device
    axis, slices of the tiny files that fit."""
    c.model.dtype = "float32"
    c.model.logits_chunk = 0
    c.mesh.shape = (1, -1, 1)
    c.task.max_prompt_len = 0
    c.rl.steps, c.rl.batch_size, c.rl.num_rollouts = 3, 8, 4
    c.rl.max_new_tokens = 16
    c.rl.num_minibatches = 2
    c.rl.learning_rate = 1e-4
    c.selection.num_candidates = 16
    c.eval.every, c.eval.num_samples, c.eval.batch_size = 3, 4, 8
    c.checkpoint.every = 2
    return c


def _tiny_model(path: Path, data: Path) -> Path:
    """The tiny Hugging Face model of the smoke runs (written once, tokenizer trained on the
    tiny files' text)."""
    if (path / "config.json").is_file():
        return path
    from insight_jax.models.tiny_hf import write_tiny_hf

    corpus = [f.read_text(errors="ignore") for f in sorted(data.rglob("*.json*"))]
    corpus.append("Let's think step by step and output the final answer within \\boxed{}.")
    tmp = path.with_name(path.name + ".tmp")
    write_tiny_hf(tmp, corpus, vocab_size=384)
    tmp.replace(path)
    return path


def deepscaler_config(arg: str | None, model: str) -> ml_collections.ConfigDict:
    """`model` on DeepScaleR-Preview, held-out avg@16 on AIME24, AMC23, MATH500, Minerva and
    OlympiadBench; the problem followed by "Let's think step by step and output the final
    answer within \\boxed{}." in one user turn of the model's chat template, rewards by
    math-verify in worker processes; 1024 prompt + 8192 response tokens (MoPPS's math recipe),
    PPO mini-batches of 128 prompts."""
    return paper_config(
        arg,
        model=model,
        task="math",
        train=DEEPSCALER,
        evals=DEEPSCALER_EVALS,
        prompt_len=1024,
        response_len=8192,
        minibatch_prompts=128,
    )
