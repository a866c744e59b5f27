"""Qwen3-0.6B on DeepScaleR-Preview (40,315 math problems), as in the paper.

Data, prompt, lengths: configs/paper_common.py, deepscaler_config; every other setting:
paper_common.paper_config. Sized for a v5p-8 slice (4 chips); every device on the fsdp axis.

  python -m insight_jax.main --workdir=workdirs/qwen3_0_6b_deepscaler \\
      --config=configs/qwen3_0_6b_deepscaler.py:data_dir=/data,model_path=/models/Qwen3-0.6B

On this CPU, with the tiny Hugging Face model and tiny files of the same formats:

  python -m insight_jax.main --config=configs/qwen3_0_6b_deepscaler.py:smoke \\
      --workdir=/tmp/smoke_qwen3_0_6b_deepscaler
"""

import ml_collections

from configs.paper_common import deepscaler_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return deepscaler_config(arg, model="Qwen/Qwen3-0.6B")
