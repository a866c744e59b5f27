"""DeepSeek-R1-Distill-Qwen-7B (Qwen2 architecture) on DeepScaleR-Preview (40,315 math
problems), as in the paper; held-out avg@16 on AIME24, AMC23, MATH500, Minerva and
OlympiadBench (the DeepScaleR repository's test files and MATH-500's), rewards by math-verify
in worker processes.

Prompt: the problem followed by "Let's think step by step and output the final answer within
\\boxed{}." in one user turn of the model's chat template; 1024 prompt + 8192 response tokens
(MoPPS's math recipe), PPO mini-batches of 128 prompts. Every other setting:
configs/paper_common.py. Sized for a v5p-32 slice (16 chips); the mesh puts every device on the fsdp
axis.

  python -m insight_jax.main --workdir=workdirs/r1_distill_qwen_7b_deepscaler \\
      --config=configs/r1_distill_qwen_7b_deepscaler.py:data_dir=/data,model_path=/models/DeepSeek-R1-Distill-Qwen-7B

Arguments (configs/paper_common.py): method=<name>, data_dir=, model_path=, smoke, smoke_dir=.
On this CPU, with the tiny Hugging Face model and tiny files of the same formats:

  python -m insight_jax.main --config=configs/r1_distill_qwen_7b_deepscaler.py:smoke \\
      --workdir=/tmp/smoke_r1_distill_qwen_7b_deepscaler
"""

import ml_collections

from configs.paper_common import DEEPSCALER, DEEPSCALER_EVALS, paper_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return paper_config(
        arg,
        model="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        task="math",
        train=DEEPSCALER,
        evals=DEEPSCALER_EVALS,
        prompt_len=1024,
        response_len=8192,
        minibatch_prompts=128,
    )
