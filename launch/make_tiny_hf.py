"""Writes a tiny random Hugging Face model folder (Qwen3-shaped weights, byte-level BPE tokenizer
trained on a task's prompts and answers, ChatML chat template) for demos and tests:

    python launch/make_tiny_hf.py /tmp/tiny_hf --task=countdown
    python -m insight_jax.main --config=configs/countdown_tiny.py:smoke \\
        --config.model.path=/tmp/tiny_hf --workdir=/tmp/wd_hf
"""

from __future__ import annotations

import argparse

from insight_jax.models.tiny_hf import write_tiny_hf
from insight_jax.tasks import get_task, list_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="folder to write (created; weight files replaced)")
    parser.add_argument("--task", default="countdown", choices=list_tasks())
    parser.add_argument("--corpus_size", type=int, default=2000, help="task problems to train on")
    parser.add_argument("--vocab_size", type=int, default=512)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--embed_dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    task = get_task(a.task)
    records = task.generate(a.corpus_size, a.seed)
    corpus = [task.prompt(r) + task.reference_completion(r) for r in records]
    path = write_tiny_hf(
        a.path,
        corpus,
        vocab_size=a.vocab_size,
        num_layers=a.num_layers,
        embed_dim=a.embed_dim,
        seed=a.seed,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
