"""Every notebook in notebooks/ runs top to bottom, is stored without outputs, and passes ruff.

Each notebook executes in a fresh Jupyter kernel (nbclient) with INSIGHT_NOTEBOOK_SMOKE=1,
which the notebooks read to shrink their work, in its own temporary working directory (a
notebook writes its runs and figures under the current directory). A cell that raises fails
the test with the cell's traceback.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def test_the_notebooks_folder_has_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [
        i
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"{path.name}: code cells {dirty} carry outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_in_colab_and_installs_the_package(path):
    nb = json.loads(path.read_text())
    first = "".join(nb["cells"][0]["source"])
    assert "colab.research.google.com/github/" in first and f"notebooks/{path.name}" in first, (
        f"{path.name}: the first cell must carry an Open-in-Colab badge pointing at this notebook"
    )
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert "pip install" in code[0], f"{path.name}: the first code cell must install the package"


def test_ruff_checks_the_notebooks():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    for args in (["check"], ["format", "--check"]):
        proc = subprocess.run(
            [ruff, *args, *map(str, NOTEBOOKS)], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 0, f"ruff {' '.join(args)}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # The kernel inherits this process's environment: smoke mode, no hub, the CPU backend with
    # one device (the test process's fake 8-device flag is for the tests, not the notebooks).
    monkeypatch.setenv("INSIGHT_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend emits PNGs
    monkeypatch.setenv(
        "XLA_FLAGS",
        os.environ.get("XLA_FLAGS", "")
        .replace("--xla_force_host_platform_device_count=8", "")
        .strip(),
    )
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    images = sum(
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    )
    assert images >= 1, f"{path.name} rendered no figure"
