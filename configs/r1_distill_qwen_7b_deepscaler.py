"""DeepSeek-R1-Distill-Qwen-7B (Qwen2 architecture) on DeepScaleR-Preview (40,315 math
problems), as in the paper.

Data, prompt, lengths: configs/paper_common.py, deepscaler_config; every other setting:
paper_common.paper_config. Sized for a v5p-32 slice (16 chips); every device on the fsdp axis.

  python -m insight_jax.main --workdir=workdirs/r1_distill_qwen_7b_deepscaler \\
      --config=configs/r1_distill_qwen_7b_deepscaler.py:data_dir=/data,model_path=/models/DeepSeek-R1-Distill-Qwen-7B

On this CPU, with the tiny Hugging Face model and tiny files of the same formats:

  python -m insight_jax.main --config=configs/r1_distill_qwen_7b_deepscaler.py:smoke \\
      --workdir=/tmp/smoke_r1_distill_qwen_7b_deepscaler
"""

import ml_collections

from configs.paper_common import deepscaler_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return deepscaler_config(arg, model="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
