"""The main job on a Hugging Face checkpoint: a tiny random HF folder (launch/make_tiny_hf.py)
trains a few RL steps on the fake 8-device mesh with its own tokenizer and chat template, and the
exported result loads in transformers as the same model and tokenizer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from configs import countdown_tiny
from insight_jax.checkpointing import Checkpointer
from insight_jax.export import export_hf
from insight_jax.models import hf
from insight_jax.rl import setup
from insight_jax.rl.train import train_and_evaluate
from insight_jax.rl.validate import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    """The folder the demo script writes (run as a user runs it)."""
    path = tmp_path_factory.mktemp("tiny_hf")
    subprocess.run(
        [sys.executable, str(ROOT / "launch/make_tiny_hf.py"), str(path), "--corpus_size=500"],
        check=True,
        capture_output=True,
    )
    return path


def _config(path, **model):
    c = countdown_tiny.get_config("smoke")
    c.model.path = str(path)
    for k, v in model.items():
        c.model[k] = v
    return c


def test_prompts_are_chat_templated(tiny_hf, tmp_path):
    comps = setup.build(_config(tiny_hf), tmp_path)
    record = comps.pool[0]
    text = comps.prompt(record)
    assert (
        text == f"<|im_start|>user\n{comps.task.prompt(record)}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert comps.policy.chat and comps.tokenizer.bos_id is None
    # The sampler stops at either of the checkpoint's EOS ids (generation_config lists two).
    gen = json.loads((tiny_hf / "generation_config.json").read_text())
    assert set(comps.rollout_engine.settings.eos_ids) == set(gen["eos_token_id"])
    # prompt_len is the longest templated prompt in tokens.
    lengths = [len(comps.tokenizer.encode(comps.prompt(r))) for r in comps.pool]
    assert comps.prompt_len == max(lengths)
    plain = setup.build(_config(tiny_hf, chat_template="off"), tmp_path / "plain")
    assert plain.prompt(record) == comps.task.prompt(record)


def test_train_export_and_load_in_transformers(tiny_hf, tmp_path, devices):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = _config(tiny_hf)
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["steps_rl"] == config.rl.steps and summary["rollouts"] > 0

    out = tmp_path / "export"
    step = export_hf(tmp_path / "run", out)
    assert step == config.warmstart.steps + config.rl.steps
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= set(
        os.listdir(out)
    )

    # Our policy at that step, restored from the run's checkpoint.
    comps = setup.build(config, tmp_path / "run")
    with Checkpointer(tmp_path / "run" / "checkpoints", max_to_keep=0) as ckpt:
        state, _ = ckpt.restore(step, comps.abstract_state)
    ours = nnx.merge(comps.graphdef, state.model)
    initial = hf.load_hf_model(tiny_hf)
    delta = jax.tree.map(
        lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
        nnx.to_pure_dict(nnx.state(ours)),
        nnx.to_pure_dict(nnx.state(initial)),
    )
    assert max(jax.tree.leaves(delta)) > 1e-4  # training changed the weights

    # transformers reads the export as the same model, on a chat-templated prompt.
    tok = transformers.AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": comps.task.prompt(comps.eval_sets[0].records[0])}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == comps.prompt(comps.eval_sets[0].records[0])
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == comps.tokenizer.encode(text)
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager"
    )
    with torch.no_grad():
        want = reference(torch.tensor([ids])).logits.numpy()
    got, _ = ours(np.asarray([ids], np.int32))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


def test_model_config_errors(tiny_hf, tmp_path):
    with pytest.raises(ConfigError, match=r"model\.path"):
        validate_config(_config(tmp_path))  # no config.json there
    with pytest.raises(ConfigError, match=r"model\.template_vars"):
        validate_config(_config(tiny_hf, chat_template="off", template_vars={"x": 1}))
    preset = countdown_tiny.get_config("smoke")
    preset.model.overrides = dict(preset.model.overrides, dtype="bfloat16")
    with pytest.raises(ConfigError, match=r"model\.overrides"):
        validate_config(preset)
    with pytest.raises(ConfigError, match=r"model\.remat"):
        validate_config(_config(tiny_hf, remat="full"))  # remat needs scanned layers
    validate_config(_config(tiny_hf, dtype="bfloat16", scan_layers=True, remat="full"))


def test_responses_must_fit_the_models_positions(tiny_hf, tmp_path):
    config = _config(tiny_hf)
    config.rl.max_new_tokens = 2048  # the tiny folder has max_position_embeddings = 2048
    with pytest.raises(ConfigError, match=r"rl\.max_new_tokens"):
        setup.build(config, tmp_path)
