"""Stream Q(lambda) per-step cost: the numpy learner against the torch implementation of the same spec.

CartPole-v1 under the reference protocol (limit 10,000, raw time feature), 5->32->32->2 network,
same seeds, one thread. Timing: both learners in one process, each on its own env, alternating
in chunks of 200 steps, so the load other tenants put on this machine (which moves medians by
2x within a minute) hits both alike: per-step act+observe microseconds (median, p99; env.step
excluded) and their ratio. Memory: each learner alone in its own process (peak RSS, VmHWM), and
for numpy the RSS every 100k steps over a long run to show memory stays flat.

    python benchmarks/stream_q.py                       # 20k steps x seeds 0-2 each, 1M-step memory run
    python benchmarks/stream_q.py --steps 5000 --long 200000

Writes benchmarks/results/stream_q.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

WORKER = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np

def rss_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

if {impl!r} == "torch":
    from edge_rl.train.stream_torch import TorchStreamQ as Learner
else:
    from edge_rl.stream import StreamQ as Learner
from edge_rl.stream.protocol import CARTPOLE_LIMIT
import gymnasium as gym

learner = Learner(5, 2, raw_tail=1, seed={seed})
env = gym.make("CartPole-v1", max_episode_steps=CARTPOLE_LIMIT)
obs, _ = env.reset(seed={seed})
t = 0
x = np.append(obs, -0.5)
times = np.full({steps}, np.nan)  # preallocated and touched now: a growing list would itself look like a leak
rss = []
start = time.perf_counter()
for step in range({steps}):
    t0 = time.perf_counter()
    action = learner.act(x)
    t1 = time.perf_counter()
    obs, reward, terminated, truncated, _ = env.step(action)
    t += 1
    nx = np.append(obs, t / CARTPOLE_LIMIT - 0.5)
    t2 = time.perf_counter()
    learner.observe(float(reward), nx, terminated, truncated)
    t3 = time.perf_counter()
    times[step] = (t1 - t0) + (t3 - t2)
    if terminated or truncated:
        obs, _ = env.reset()
        t = 0
        nx = np.append(obs, -0.5)
    x = nx
    if (step + 1) % {every} == 0:
        rss.append(rss_mb("VmRSS:"))
wall = time.perf_counter() - start
times.sort()
median, p99 = float(times[len(times) // 2]), float(times[int(0.99 * len(times))])
print(json.dumps({{"median_us": median * 1e6, "p99_us": p99 * 1e6,
                  "steps_per_s": {steps} / wall, "peak_rss_mb": rss_mb("VmHWM:"), "rss_mb": rss,
                  "torch_imported": "torch" in sys.modules}}))
"""


PAIRED = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np
import gymnasium as gym
from edge_rl.stream import StreamQ
from edge_rl.stream.protocol import CARTPOLE_LIMIT
from edge_rl.train.stream_torch import TorchStreamQ

def loop(learner, seed):
    env = gym.make("CartPole-v1", max_episode_steps=CARTPOLE_LIMIT)
    obs, _ = env.reset(seed=seed)
    t, x = 0, np.append(obs, -0.5)
    while True:
        t0 = time.perf_counter()
        action = learner.act(x)
        t1 = time.perf_counter()
        obs, reward, terminated, truncated, _ = env.step(action)
        t += 1
        nx = np.append(obs, t / CARTPOLE_LIMIT - 0.5)
        t2 = time.perf_counter()
        learner.observe(float(reward), nx, terminated, truncated)
        yield (t1 - t0) + (time.perf_counter() - t2)
        if terminated or truncated:
            obs, _ = env.reset()
            t, nx = 0, np.append(obs, -0.5)
        x = nx

runs = {{"numpy": loop(StreamQ(5, 2, raw_tail=1, seed={seed}), {seed}),
        "torch": loop(TorchStreamQ(5, 2, raw_tail=1, seed={seed}), {seed})}}
times = {{k: [] for k in runs}}
for _ in range({steps} // 200):
    for name, steps in runs.items():
        times[name].extend(next(steps) for _ in range(200))
out = {{}}
for name, ts in times.items():
    ts.sort()
    out[name] = {{"median_us": ts[len(ts) // 2] * 1e6, "p99_us": ts[int(0.99 * len(ts))] * 1e6}}
print(json.dumps(out))
"""


def paired(seed: int, steps: int) -> dict:
    """Interleaved timing of both learners in one process (see the module docstring)."""
    code = PAIRED.format(root=str(ROOT), seed=seed, steps=steps)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=7200)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(impl: str, seed: int, steps: int, every: int) -> dict:
    code = WORKER.format(root=str(ROOT), impl=impl, seed=seed, steps=steps, every=every)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=7200)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="steps per timed run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--long", type=int, default=1_000_000, help="steps of the numpy memory run (0: skip)")
    args = parser.parse_args()
    from edge_rl.table import print_table

    rows, memory = [], {}
    for seed in args.seeds:
        timing = paired(seed, args.steps)
        rows += [{"impl": impl, "seed": seed, **timing[impl]} for impl in ("numpy", "torch")]
    for impl in ("numpy", "torch"):  # alone in a process: its own peak RSS and steps/s
        memory[impl] = run(impl, args.seeds[0], args.steps, args.steps)
    summary = {}
    for impl in ("numpy", "torch"):
        mine = [r for r in rows if r["impl"] == impl]
        summary[impl] = {k: statistics.median(r[k] for r in mine) for k in ("median_us", "p99_us")}
        summary[impl].update(steps_per_s=memory[impl]["steps_per_s"], peak_rss_mb=memory[impl]["peak_rss_mb"])
    ratio = statistics.median(
        t["median_us"] / n["median_us"]
        for n, t in zip(rows[0::2], rows[1::2], strict=True)  # per seed, from the same interleaved run
    )
    print_table(
        ["learner", "act+learn median us", "p99 us", "steps/s (alone, with env)", "peak RSS MB (alone)"],
        [[k, v["median_us"], v["p99_us"], v["steps_per_s"], v["peak_rss_mb"]] for k, v in summary.items()],
    )
    print(f"numpy is {ratio:.1f}x faster per step than torch (median over seeds {args.seeds} of interleaved runs)")
    long_run = None
    if args.long:
        long_run = run("numpy", 0, args.long, 100_000)
        print(
            f"numpy learner, {args.long:,} steps: RSS every 100k steps {[round(m, 1) for m in long_run['rss_mb']]} MB"
        )
    out = RESULTS / "stream_q.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"steps": args.steps, "runs": rows, "summary": summary, "ratio": ratio, "long": long_run}, indent=1)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
