"""End-to-end demo on the embedded defaults: train, evaluate, compare with baselines, compress, export, adapt.

    python examples/demo.py            # CartPole-v1 and AntiJam-v0 (sweeping jammer), ~1-2 min
    python examples/demo.py --all      # also Hover-v0 and LineFollow-v0, a few minutes more

Every step is the user-facing command (`edge-rl train`, `edge-rl eval`) run in-process; the final
table sets each trained policy next to the env's scripted baselines on the same evaluation seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_rl.cli import main as edge_rl  # noqa: E402
from edge_rl.envs.baselines import BASELINES, run_baseline  # noqa: E402
from edge_rl.evaluate import evaluate  # noqa: E402
from edge_rl.gymenv import make_env  # noqa: E402
from edge_rl.policy import Policy  # noqa: E402
from edge_rl.table import print_table  # noqa: E402

EPISODES, EVAL_SEED = 50, 20_000

# (env id, env kwargs, training steps)
TASKS = [
    ("CartPole-v1", {}, 50_000),
    ("edge_rl/AntiJam-v0", {"jammer": "sweeping"}, 30_000),
]
MORE_TASKS = [
    ("edge_rl/Hover-v0", {}, 60_000),
    ("edge_rl/LineFollow-v0", {}, 60_000),
]


def run_task(env_id: str, kwargs: dict, steps: int, out: Path) -> list[list]:
    label = env_id + "".join(f" {k}={v}" for k, v in kwargs.items())
    print(f"\n== {label}: train {steps:,} steps -> {out}", flush=True)
    code = edge_rl(
        ["train", env_id, "--steps", str(steps), "--seed", "0", "--out", str(out), "--env-kwargs", json.dumps(kwargs)]
    )
    if code:
        raise SystemExit(code)
    edge_rl(["eval", str(out), "--episodes", str(EPISODES), "--seed", str(EVAL_SEED)])

    env = make_env(env_id, kwargs)
    best = getattr(env.unwrapped, "best_success_rate", None)
    env.close()
    trained = evaluate(Policy.load(out).act, env_id, EPISODES, EVAL_SEED, kwargs)
    rows = [[label, "DQN (edge-rl)", trained.mean_return, trained.success_rate, best]]
    for name in BASELINES.get(env_id, {}):
        r = run_baseline(env_id, name, EPISODES, EVAL_SEED, **kwargs)
        rows.append([label, f"baseline: {name}", r["mean_return"], r.get("success_rate"), best])
    return rows


def compress(teacher: Path, out: Path) -> None:
    """Distill the AntiJam teacher into an int8 student (QAT) and print its model card."""
    print(f"\n== distill {teacher} -> int8 student {out}", flush=True)
    code = edge_rl(
        ["distill", str(teacher), "--hidden", "24,24", "--quant", "int8", "--steps", "8000", "--out", str(out)]
    )
    if code:
        raise SystemExit(code)
    edge_rl(["card", str(out), "--reference", str(teacher), "--episodes", str(EPISODES)])


def export(student: Path, out: Path) -> None:
    """Export the int8 student to a signed, verified bundle (ONNX, TFLite, C header) and verify it again."""
    import shutil

    print(f"\n== export {student} -> signed bundle {out}", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    key = out.parent / "demo-key"
    if not key.exists():
        edge_rl(["keygen", "--out", str(key)])
    code = edge_rl(["export", str(student), "--out", str(out), "--sign", str(key)])
    if code:
        raise SystemExit(code)
    print(f"\n== verify {out} with the pinned public key, as a device would", flush=True)
    print("   (max|dQ|: the largest Q-value difference from the numpy IR; an int8 bundle must match it exactly)")
    code = edge_rl(["verify", str(out), "--public-key", f"{key}.pub"])
    if code:
        raise SystemExit(code)


def adapt(student: Path, out: Path) -> None:
    """Deploy the int8 student against a jammer that turns reactive mid-run, frozen and adapting online.

    Both figures are the mean success rate of the episodes that ended in steps 10k-15k (the adapt
    command's last 5,000-step window), so the line `edge-rl adapt` prints and the table agree.
    """
    from edge_rl.agent import FrozenAgent
    from edge_rl.stream.report import curve
    from edge_rl.stream.simulate import run_stream

    print(f"\n== adapt {student} online while the jammer switches sweeping -> reactive at step 5,000", flush=True)
    print("   (success rate: the fraction of slots whose packet got through, averaged over episodes)")
    shift = '5000:{"jammer": "reactive"}'
    args = ["adapt", str(student), "--steps", "15000", "--mode", "full", "--shift", shift, "--window", "5000"]
    code = edge_rl([*args, "--out", str(out)])
    if code:
        raise SystemExit(code)
    policy = Policy.load(student)
    frozen = run_stream(
        FrozenAgent(policy.act),
        "edge_rl/AntiJam-v0",
        15_000,
        0,
        {"jammer": "sweeping"},
        shift=(5000, {"jammer": "reactive"}),
    )
    adapted = json.loads((out / "adapt.json").read_text())["curve"]["success_rate"][-1]
    print_table(
        ["policy", "success rate, steps 10k-15k (after the switch)"],
        [
            ["int8 student, frozen", curve(frozen, 15_000, 5_000)["success_rate"][-1]],
            ["int8 student, stream Q(lambda) full", adapted],
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="also train Hover-v0 and LineFollow-v0")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "demo")
    args = parser.parse_args()
    rows = []
    for env_id, kwargs, steps in TASKS + (MORE_TASKS if args.all else []):
        rows += run_task(env_id, kwargs, steps, args.out / env_id.split("/")[-1])
    compress(args.out / "AntiJam-v0", args.out / "AntiJam-v0-int8")
    export(args.out / "AntiJam-v0-int8", args.out / "AntiJam-v0-int8-bundle")
    adapt(args.out / "AntiJam-v0-int8", args.out / "AntiJam-v0-adapted")
    print(f"\n== results: greedy, {EPISODES} episodes on seeds {EVAL_SEED}..{EVAL_SEED + EPISODES - 1}")
    print("   (best success rate: the most any policy can reach against that jammer, the env's own reference)")
    print_table(
        ["task", "policy", "mean return", "success rate", "best success rate"],
        [[c if c is not None else "-" for c in row] for row in rows],
    )


if __name__ == "__main__":
    main()
