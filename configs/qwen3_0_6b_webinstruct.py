"""Qwen3-0.6B on WebInstruct-verified (general reasoning), as in the paper; held-out avg@16 on
MMLU and GPQA-diamond as multiple choice (letter in \\boxed{}).

The training questions are read as the math task: the question followed by the \\boxed{}
instruction, the reference answer checked by math-verify. (The paper's general-reasoning reward
is not specified in its text; a model-based verifier is out of scope here, so non-mathematical
answers only score when they match after math-verify's normalisation.) 1024 prompt + 8192
response tokens, PPO mini-batches of 128 prompts. Every other setting: configs/paper_common.py.
Sized for a v5p-8 slice (4 chips); the mesh puts every device on the fsdp axis.

  python -m insight_jax.main --workdir=workdirs/qwen3_0_6b_webinstruct \\
      --config=configs/qwen3_0_6b_webinstruct.py:data_dir=/data,model_path=/models/Qwen3-0.6B

Arguments (configs/paper_common.py): method=<name>, data_dir=, model_path=, smoke, smoke_dir=.
On this CPU, with the tiny Hugging Face model and tiny files of the same formats:

  python -m insight_jax.main --config=configs/qwen3_0_6b_webinstruct.py:smoke \\
      --workdir=/tmp/smoke_qwen3_0_6b_webinstruct
"""

import ml_collections

from configs.paper_common import GENERAL_EVALS, WEBINSTRUCT, paper_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return paper_config(
        arg,
        model="Qwen/Qwen3-0.6B",
        task="math",
        train=WEBINSTRUCT,
        evals={
            name: {"path": path, "task": "multiple_choice"} for name, path in GENERAL_EVALS.items()
        },
        prompt_len=1024,
        response_len=8192,
        minibatch_prompts=128,
    )
