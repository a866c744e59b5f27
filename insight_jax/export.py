"""Export a run's policy as a Hugging Face checkpoint that transformers or vLLM can serve.

  python -m insight_jax.export --workdir=DIR --out=OUT [--step=N] [--dtype=bfloat16]

Reads DIR/config.json (the run's fingerprint), restores the newest intact checkpoint (or
--step) and writes OUT/: safetensors weights, config.json, generation_config.json and, for a run
started from a Hugging Face folder (model.path), that folder's tokenizer and chat-template
files and its other config keys (token ids...), so OUT loads like the original model.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import app, flags, logging
from flax import nnx

from insight_jax.models import hf
from insight_jax.rl.train import restore_run


def export_hf(
    workdir: str | Path, out: str | Path, *, step: int | None = None, dtype: str | None = None
) -> int:
    """Writes the policy of `workdir` at `step` (default: the newest intact checkpoint) to
    `out` as a Hugging Face checkpoint; returns the step exported. dtype: of the saved weights
    (default: the source checkpoint's for a model.path run, else the parameters')."""
    comps, step, state = restore_run(workdir, step)
    model = nnx.merge(comps.graphdef, state.model)
    source = comps.policy.path
    hf_config = generation = None
    if source is not None:
        hf_config = hf.read_hf_config(source)
        if dtype is None:
            dtype = hf_config.get("dtype") or hf_config.get("torch_dtype")
        gen_file = source / "generation_config.json"
        generation = json.loads(gen_file.read_text()) if gen_file.is_file() else None
    hf.save_hf_model(model, out, dtype=dtype, hf_config=hf_config, generation_config=generation)
    if source is not None:
        hf.copy_tokenizer_files(source, out)  # tokenizer, chat template, generation config
    return step


FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The run's workdir.")
flags.DEFINE_string("out", None, "Folder to write the Hugging Face checkpoint to.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest intact one).")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"], "Weights' dtype.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore step at INFO
    step = export_hf(FLAGS.workdir, FLAGS.out, step=FLAGS.step, dtype=FLAGS.dtype)
    print(f"exported step {step} of {FLAGS.workdir} to {FLAGS.out}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir", "out"])
    app.run(main)
