"""Qwen3-0.6B on Countdown (3-4 numbers), as in the paper: the first 2,000 rows of the public
Countdown-Tasks-3to4 parquet train, rows 2000-2511 are the held-out set (avg@16).

TinyZero's base prompt in one user turn of the chat template (as MoPPS's verl recipe), the
paper's reward (1 / 0.1 / 0), 256 prompt + 1024 response tokens, PPO mini-batches of 64 prompts.
Every other setting: configs/paper_common.py. Sized for a v5p-8 slice (4 chips), or 8 GPUs as
in the paper; the mesh puts every device on the fsdp axis.

  python -m insight_jax.main --workdir=workdirs/qwen3_0_6b_countdown \\
      --config=configs/qwen3_0_6b_countdown.py:data_dir=/data,model_path=/models/Qwen3-0.6B

Arguments (configs/paper_common.py): method=<name>, data_dir=, model_path=, smoke, smoke_dir=.
On this CPU, with the tiny Hugging Face model and tiny files of the same formats:

  python -m insight_jax.main --config=configs/qwen3_0_6b_countdown.py:smoke \\
      --workdir=/tmp/smoke_qwen3_0_6b_countdown
"""

import ml_collections

from configs.paper_common import COUNTDOWN, paper_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return paper_config(
        arg,
        model="Qwen/Qwen3-0.6B",
        task="countdown",
        task_kwargs=dict(prompt_style="base"),
        train=f"{COUNTDOWN}[:2000]",
        evals={"countdown": f"{COUNTDOWN}[2000:2512]"},
        prompt_len=256,
        response_len=1024,
        minibatch_prompts=64,
        smoke_slices={"train": "[:32]", "countdown": "[32:48]"},
    )
