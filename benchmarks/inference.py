"""Single-observation inference per backend x precision, against torch eager, plus export parity.

For CartPole-v1 and AntiJam-v0 (sweeping), the fp32 / int8 / 1-bit students of
`benchmarks/compression.py` (distilled first if missing) are exported to bundles. Then:

- parity: every backend against the numpy IR on the golden I/O and 10k held-out states the
  teacher visits (`edge-rl verify --states`): max |dQ|, agreement, tolerance;
- latency: a process per (policy, backend) that imports numpy and that runtime only (torch
  is asserted absent), loads the bundle and times `backend.act(obs)` for 10k single
  observations after 1k warm-ups, one thread; median, p99 and peak RSS (VmHWM) of the process,
  each the median over three such processes;
- the same loop with torch eager (`inference_mode`, one thread) on the fp32 network the
  student was distilled to, in the same run, as the reference.

    python benchmarks/inference.py                 # ~3 min once the students exist
    python benchmarks/inference.py --calls 2000    # quicker

Writes benchmarks/results/inference.json and bundles under benchmarks/results/bundles/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
TASKS = ("cartpole", "antijam-sweeping")
PRECISIONS = {"fp32": "none", "int8": "int8", "1-bit": "1bit"}
BACKENDS = ("numpy", "onnxruntime", "litert", "litert-builtin")  # litert = the XNNPACK delegate
FILES = {
    "numpy": "policy.safetensors",
    "onnxruntime": "model.onnx",
    "litert": "model.tflite",
    "litert-builtin": "model.tflite",
}
HELD_OUT, HELD_OUT_SEED = 10_000, 424_242

PEAK_RSS = r"""
def peak_rss_mb():
    # VmHWM of this process; ru_maxrss would include the parent's peak, which Linux keeps across exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

TIMER = (
    PEAK_RSS
    + r"""
import json, statistics, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from edge_rl.bundle import open_bundle
from edge_rl.runtime import make_backend
bundle = open_bundle({bundle!r})
backend = make_backend({backend!r}, bundle)
obs = bundle.golden.observations
for i in range(1000):
    backend.act(obs[i % len(obs)])
times = []
for i in range({calls}):
    o = obs[i % len(obs)]
    t0 = time.perf_counter()
    backend.act(o)
    times.append(time.perf_counter() - t0)
times.sort()
assert "torch" not in sys.modules, "a device process imported torch"
print(json.dumps({{"median_us": statistics.median(times) * 1e6, "p99_us": times[int(0.99 * len(times))] * 1e6,
                  "peak_rss_mb": peak_rss_mb()}}))
"""
)

TORCH_TIMER = (
    PEAK_RSS
    + r"""
import json, statistics, sys, time
import numpy as np
import torch
sys.path.insert(0, {root!r})
from edge_rl.layers import Activation, Dense
from edge_rl.policy import Policy
torch.set_num_threads(1)
policy = Policy.load({policy!r})
modules = []
for layer in policy.layers:
    if isinstance(layer, Dense):
        linear = torch.nn.Linear(layer.weight.shape[1], layer.weight.shape[0])
        linear.weight.data = torch.from_numpy(layer.weight.copy())
        linear.bias.data = torch.from_numpy(layer.bias.copy())
        modules.append(linear)
    elif isinstance(layer, Activation):
        modules.append(torch.nn.ReLU())
net = torch.nn.Sequential(*modules).eval()
mean, scale, clip = (torch.from_numpy(np.asarray(a)) for a in policy.observation.flat_normalization)
obs = np.load({states!r})[:64]

def act(o):
    with torch.inference_mode():
        x = torch.clamp((torch.from_numpy(o) - mean) * scale, -clip, clip)
        return int(net(x.unsqueeze(0)).argmax())

for i in range(1000):
    act(obs[i % len(obs)])
times = []
for i in range({calls}):
    o = obs[i % len(obs)]
    t0 = time.perf_counter()
    act(o)
    times.append(time.perf_counter() - t0)
times.sort()
print(json.dumps({{"median_us": statistics.median(times) * 1e6, "p99_us": times[int(0.99 * len(times))] * 1e6,
                  "peak_rss_mb": peak_rss_mb()}}))
"""
)


def run_json(code: str, repeats: int = 3) -> dict:
    """Median over `repeats` fresh processes of each figure (this machine is noisy)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
        if out.returncode:
            raise RuntimeError(out.stderr.strip().splitlines()[-1])
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def ensure_students() -> None:
    """Run the compression benchmark for tasks whose students are not there yet."""
    have = RESULTS / "students"
    missing = [t for t in TASKS if not all((have / f"{t}-{q}" / "policy.json").exists() for q in PRECISIONS.values())]
    if missing:
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compression.py"), "--tasks", *missing], check=True)


def c_header_row(task: str, precision: str, bundle: Path, held_out, tol: float) -> dict:
    """policy.h compiled with cc and run on the golden and held-out states, against the IR (no timing)."""

    from edge_rl.bundle import open_bundle
    from edge_rl.runtime.parity import compare
    from export.c_check import run_header

    opened = open_bundle(bundle)
    header = opened.files["policy.h"].decode("ascii")
    checks = []
    for states, reference in ((opened.golden.observations, opened.golden.q_values), (held_out, None)):
        _, q, _ = run_header(header, states)
        reference = opened.policy.q_values(states) if reference is None else reference
        checks.append(compare(reference, q, tol))
    return {
        "task": task,
        "precision": precision,
        "backend": "policy.h (cc -O2)",
        "file": "policy.h",
        "file_bytes": len(opened.files["policy.h"]),
        "golden_max_dq": checks[0]["max_abs_dq"],
        "held_out_max_dq": checks[1]["max_abs_dq"],
        "tolerance": tol,
        "agreement": min(c["agreement"] for c in checks),
        "passed": all(c["passed"] for c in checks),
        "median_us": float("nan"),
        "p99_us": float("nan"),
        "peak_rss_mb": float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="timed single-observation calls per backend")
    args = parser.parse_args()
    ensure_students()

    import numpy as np
    from compression import TASKS as ENV_OF  # benchmarks/ is on sys.path when run as a script

    from edge_rl.bundle import open_bundle
    from edge_rl.policy import Policy
    from edge_rl.rollout import collect_states
    from edge_rl.runtime import verify_bundle
    from edge_rl.table import print_table
    from export.exporter import export_bundle

    rows = []
    for task in TASKS:
        env_id, kwargs = ENV_OF[task]
        teacher = Policy.load(RESULTS / "teachers" / task)
        held_out = collect_states(teacher.act, env_id, HELD_OUT, HELD_OUT_SEED, 0.0, kwargs)
        states_file = RESULTS / "bundles" / f"{task}-held-out.npy"
        states_file.parent.mkdir(parents=True, exist_ok=True)
        np.save(states_file, held_out)
        for precision, quant in PRECISIONS.items():
            policy = Policy.load(RESULTS / "students" / f"{task}-{quant}")
            out = RESULTS / "bundles" / f"{task}-{quant}"
            shutil.rmtree(out, ignore_errors=True)
            golden = collect_states(policy.act, env_id, 64, 0, 0.1, kwargs)
            export_bundle(policy, out, ["onnx", "tflite", "c"], golden, held_out, bundle_version=1)
            report = verify_bundle(open_bundle(out), states=held_out)
            sizes = {p.name: p.stat().st_size for p in out.iterdir()}
            for backend in BACKENDS:
                parity = report["backends"][backend]
                timing = run_json(TIMER.format(root=str(ROOT), bundle=str(out), backend=backend, calls=args.calls))
                rows.append(
                    {
                        "task": task,
                        "precision": precision,
                        "backend": backend,
                        "file": FILES[backend],
                        "file_bytes": sizes[FILES[backend]],
                        "golden_max_dq": parity["golden"]["max_abs_dq"],
                        "held_out_max_dq": parity["extra"]["max_abs_dq"],
                        "tolerance": report["tolerance"],
                        "agreement": min(parity["golden"]["agreement"], parity["extra"]["agreement"]),
                        "passed": parity["passed"],
                        **timing,
                    }
                )
            rows.append(c_header_row(task, precision, out, held_out, report["tolerance"]))
        fp32_dir = RESULTS / "students" / f"{task}-none"
        timing = run_json(
            TORCH_TIMER.format(root=str(ROOT), policy=str(fp32_dir), states=str(states_file), calls=args.calls)
        )
        rows.append(
            {"task": task, "precision": "fp32", "backend": "torch eager", "file": "-", "file_bytes": None, **timing}
        )
    for row in rows:
        torch_row = next(r for r in rows if r["task"] == row["task"] and r["backend"] == "torch eager")
        row["speedup_vs_torch"] = torch_row["median_us"] / row["median_us"]  # NaN for the C header (not timed)
    print_table(
        [
            "task",
            "precision",
            "backend",
            "file bytes",
            "max|dQ| golden",
            "max|dQ| 10k",
            "agreement",
            "median us",
            "p99 us",
            "x torch",
            "peak RSS MB",
        ],
        [
            [
                r["task"],
                r["precision"],
                r["backend"],
                r["file_bytes"] if r["file_bytes"] is not None else "-",
                r.get("golden_max_dq", "-"),
                r.get("held_out_max_dq", "-"),
                r.get("agreement", "-"),
                r["median_us"],
                r["p99_us"],
                r["speedup_vs_torch"],
                r["peak_rss_mb"],
            ]
            for r in rows
        ],
    )
    out = RESULTS / "inference.json"
    out.write_text(json.dumps({"calls": args.calls, "held_out": HELD_OUT, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
