"""The README's commands, run as written (the main job with the smoke shrink)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _env(**extra):
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        HF_HUB_OFFLINE="1",
        **extra,
    )


def test_the_main_job_command_with_a_scorer_override(tmp_path):
    """`bash launch/local.sh` (smoke-shrunk) with the README's `--config.selection.scorer=mopps`:
    it trains, the terminal shows no library INFO logs, and the workdir holds what the README
    lists."""
    assert "bash launch/local.sh" in README and "--config.selection.scorer=mopps" in README
    workdir = tmp_path / "run"
    out = subprocess.run(
        ["bash", "launch/local.sh", str(workdir), "--config.selection.scorer=mopps"],
        cwd=ROOT,
        env=_env(INSIGHT_CONFIG="configs/arithmetic_tiny.py:smoke"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "== summary ==" in out.stdout and "scorer: mopps" in out.stdout
    terminal = out.stdout + out.stderr
    # absl's INFO lines look like "I1201 11:11:38.389 ..."; they belong in train.log.
    assert not re.search(r"^I\d{4} ", terminal, re.M), terminal[:2000]
    assert len(terminal.splitlines()) < 60
    assert re.search(r"^I\d{4} |INFO", (workdir / "train.log").read_text(), re.M)
    for name in ("metrics.jsonl", "tb", "checkpoints", "learning_curves.png", "summary.json"):
        assert (workdir / name).exists(), name
        assert f"`{name}" in README, name
    assert (workdir / "final_beliefs.npz").exists()


def test_the_config_argument_form_and_a_misspelt_key():
    from configs import arithmetic_tiny

    assert "configs/arithmetic_tiny.py:mopps" in README
    assert arithmetic_tiny.get_config("mopps").selection.scorer == "mopps"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "insight_jax.main",
            "--config=configs/arithmetic_tiny.py:smoke",
            "--workdir=/nonexistent/never/used",
            "--config.rl.stpes=10",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0 and "stpes" in out.stderr


def test_the_selector_in_five_calls():
    """The README's Python block runs (the rollouts it leaves out are filled with zeros)."""
    (block,) = re.findall(r"```python\n(.*?)```", README, re.S)
    namespace = {"successes": jnp.zeros(256)}
    exec(compile(block, "README.md", "exec"), namespace)
    beliefs, idx = namespace["beliefs"], np.asarray(namespace["idx"])
    assert idx.shape == (256,) and len(set(idx.tolist())) == 256
    # 256 prompts got K = 8 failures each: their beta grew by 8, nobody else's did.
    beta = np.asarray(beliefs.beta)
    assert np.all(beta[idx] == 9.0) and np.sum(beta == 9.0) == 256


def test_the_selection_demo_command(tmp_path):
    assert "python -m insight_jax.selection.demo --out=" in README
    out = subprocess.run(
        [sys.executable, "-m", "insight_jax.selection.demo", f"--out={tmp_path}"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "insight" in out.stdout and (tmp_path / "selection_demo.png").stat().st_size > 1000


def _run_section(title: str, count: int, tmp_path) -> subprocess.CompletedProcess:
    """Runs the `.venv/bin/python` commands of the README section `title` as written (there
    must be `count` of them), with workdirs/ pointed at tmp_path; returns the last run."""
    section = README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    commands = [
        line.strip() for line in section.splitlines() if line.startswith("    .venv/bin/python")
    ]
    assert len(commands) == count
    for command in commands:
        args = command.replace("workdirs/", f"{tmp_path}/").split()
        args[0] = sys.executable
        out = subprocess.run(
            args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, (command, out.stderr[-3000:])
    return out


def test_the_hugging_face_commands(tmp_path):
    """The three commands of "Training a Hugging Face checkpoint": make, train, export."""
    _run_section("Training a Hugging Face checkpoint", 3, tmp_path)
    exported = set(os.listdir(tmp_path / "tiny_hf_export"))
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= exported


def test_the_paper_smoke_commands(tmp_path):
    """The two commands of "Reproducing the paper": a smoke run of a paper config, then the
    standalone evaluation of it."""
    out = _run_section("Reproducing the paper", 2, tmp_path)
    assert "## math500" in out.stdout and "## aime24" in out.stdout
    saved = tmp_path / "smoke_deepscaler" / "evaluations" / "step_3" / "eval_results.json"
    assert saved.is_file()
    assert "## math500" in (tmp_path / "smoke_deepscaler" / "eval_tables.md").read_text()
