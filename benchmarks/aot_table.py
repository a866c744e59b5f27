"""Which TPU slices the paper's three models fit, at the paper's settings: launch/aot_check.py
for each (model, topology), compiled ahead of time on this CPU (nothing runs).

  Qwen3-0.6B           configs/qwen3_0_6b_countdown.py     256 + 1024 tokens, pool 2,000
  Qwen3-4B             configs/qwen3_4b_deepscaler.py      1024 + 8192 tokens, pool 40,315
  R1-Distill-Qwen-7B   configs/r1_distill_qwen_7b_deepscaler.py

on v5e-8 / v5e-16 / v5e-32 (v5e:2x4, 4x4, 4x8), v4-8 / v4-16 (v4:2x2x1, 2x2x2) and v5p-8
(v5p:2x2x1), every device on the fsdp axis as the configs set. The model shapes are the
presets (the configs name checkpoint folders that need not exist here). Each check runs in
its own process under --timeout; a check that runs out of time is recorded as such.

  python benchmarks/aot_table.py                       # all (hours on 2 cores)
  python benchmarks/aot_table.py --models qwen3_0_6b --topologies v5e:2x4,v5e:4x8

Writes benchmarks/results/aot_table.json (merged with earlier rows: a re-run of one pair
replaces that pair) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "aot_table.json"
GIB = 1 << 30

# name -> (config, preset, pool size)
MODELS = {
    "qwen3_0_6b": ("configs/qwen3_0_6b_countdown.py", "qwen3_0_6b", 2000),
    "qwen3_4b": ("configs/qwen3_4b_deepscaler.py", "qwen3_4b", 40315),
    "r1_distill_qwen_7b": ("configs/r1_distill_qwen_7b_deepscaler.py", "r1_distill_qwen_7b", 40315),
}
# topology -> (slice name, chips)
TOPOLOGIES = {
    "v4:2x2x1": ("v4-8", 4),
    "v5p:2x2x1": ("v5p-8", 4),
    "v5e:2x4": ("v5e-8", 8),
    "v4:2x2x2": ("v4-16", 8),
    "v5e:4x4": ("v5e-16", 16),
    "v5e:4x8": ("v5e-32", 32),
}


def check(model: str, topology: str, timeout: float) -> dict:
    config, preset, pool = MODELS[model]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [
            sys.executable, str(ROOT / "launch" / "aot_check.py"), f"--config={ROOT / config}",
            f"--topology={topology}", f"--model_preset={preset}", f"--num_items={pool}",
            f"--json_out={out}",
        ]  # fmt: skip
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return dict(status="timeout", wall_s=time.perf_counter() - t0, timeout_s=timeout)
        wall = time.perf_counter() - t0
        if proc.returncode not in (0, 1) or not out.is_file():
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            return dict(status=f"error (exit {proc.returncode})", wall_s=wall, stderr=tail)
        report = json.loads(out.read_text())
    return dict(status="fits" if report["fits"] else "does not fit", wall_s=wall, report=report)


def cell(row: dict | None) -> str:
    """One table cell: 'yes 11.2G (rollout)' (the largest step total per device), or why not:
    the first step the compiler refused and the temporaries it asked for."""
    if row is None:
        return "not run"
    report = row.get("report")
    if not report:
        return row["status"]
    if not report["steps"]:
        return f"no: state {report['state_bytes_per_device'] / GIB:.1f}G > HBM"
    refused = [s for s in report["steps"] if s["error"]]
    if refused:
        asked = re.search(r"temporaries \(([0-9.]+[GT])\)", refused[0]["error"])
        need = f" {asked.group(1)} temps" if asked else ""
        return f"no: {refused[0]['name']} OOM{need}"
    worst = max(report["steps"], key=lambda s: s["total_bytes"])
    verdict = "yes" if report["fits"] else "no"
    return f"{verdict} {worst['total_bytes'] / GIB:.1f}G ({worst['name']})"


def smallest(rows: dict, model: str) -> str:
    fitting = [t for t in TOPOLOGIES if rows.get(f"{model}@{t}", {}).get("status") == "fits"]
    if not fitting:
        return "none of those checked"
    best = min(fitting, key=lambda t: TOPOLOGIES[t][1])
    return f"{TOPOLOGIES[best][0]} ({best})"


def table(rows: dict) -> str:
    """A Markdown table: a row per model, a column per slice."""
    names = [f"{TOPOLOGIES[t][0]} ({t})" for t in TOPOLOGIES]
    lines = ["| model | " + " | ".join(names) + " | smallest that fits |"]
    lines.append("|---" * (len(names) + 2) + "|")
    for model in MODELS:
        cells = [cell(rows.get(f"{model}@{t}")) for t in TOPOLOGIES]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {smallest(rows, model)} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--topologies", default=",".join(TOPOLOGIES))
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per check")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--table_only", action="store_true", help="reprint the table of --out")
    args = p.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"rows": {}}
    if args.table_only:
        print(table(results["rows"]))
        return
    results["meta"] = dict(loadavg_start=os.getloadavg(), argv=sys.argv[1:])
    for model in args.models.split(","):
        for topology in args.topologies.split(","):
            if model not in MODELS or topology not in TOPOLOGIES:
                p.error(f"unknown model {model!r} or topology {topology!r}")
            row = check(model, topology, args.timeout)
            results["rows"][f"{model}@{topology}"] = row
            print(f"{model} on {topology}: {cell(row)}, {row['wall_s']:.0f} s")
            if row.get("report"):
                print(row["report"]["table"])
            out.write_text(json.dumps(results, indent=2))  # after each check: partial runs count
    results["table"] = table(results["rows"])
    out.write_text(json.dumps(results, indent=2))
    print(results["table"])


if __name__ == "__main__":
    main()
