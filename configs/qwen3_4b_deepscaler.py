"""Qwen3-4B on DeepScaleR-Preview (40,315 math problems), as in the paper; held-out avg@16 on
AIME24, AMC23, MATH500, Minerva and OlympiadBench (the DeepScaleR repository's test files and
MATH-500's), rewards by math-verify in worker processes.

Prompt: the problem followed by "Let's think step by step and output the final answer within
\\boxed{}." in one user turn of the model's chat template; 1024 prompt + 8192 response tokens
(MoPPS's math recipe), PPO mini-batches of 128 prompts. Every other setting:
configs/paper_common.py. Sized for a v5p-16 slice (8 chips); the mesh puts every device on the fsdp
axis.

  python -m insight_jax.main --workdir=workdirs/qwen3_4b_deepscaler \\
      --config=configs/qwen3_4b_deepscaler.py:data_dir=/data,model_path=/models/Qwen3-4B

Arguments (configs/paper_common.py): method=<name>, data_dir=, model_path=, smoke, smoke_dir=.
On this CPU, with the tiny Hugging Face model and tiny files of the same formats:

  python -m insight_jax.main --config=configs/qwen3_4b_deepscaler.py:smoke \\
      --workdir=/tmp/smoke_qwen3_4b_deepscaler
"""

import ml_collections

from configs.paper_common import DEEPSCALER, DEEPSCALER_EVALS, paper_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return paper_config(
        arg,
        model="Qwen/Qwen3-4B",
        task="math",
        train=DEEPSCALER,
        evals=DEEPSCALER_EVALS,
        prompt_len=1024,
        response_len=8192,
        minibatch_prompts=128,
    )
