"""The policy on a Cortex-M3 (QEMU's lm3s6965evb): flash, RAM and instructions per decision and learning step.

For CartPole-v1 and AntiJam-v0 (sweeping), the fp32 / int8 / 1-bit students of
`benchmarks/compression.py` (run it first; `--shaped` uses the test suite's policies of the same
shapes instead) are exported to `policy.h` and built twice with arm-none-eabi-gcc -Os:
- the firmware (`firmware_bridge/firmware/cortex_m`: the policy, the protocol library, the
  on-device head learner, UART and start-up code): `arm-none-eabi-size` flash (text + data) and
  RAM (data + bss, with the 4 KB stack), and whether it links into 32 KB flash / 8 KB RAM
  (the budget build, 2 KB stack);
- `cortex_m/bench.c` under `qemu-system-arm -icount shift=0`, where guest time advances 1 ns per
  instruction: instructions per decision (`edge_rl_act`), per learning step (features, the head's
  forward and choice, then `edgerl_headq_learn`) and per update alone, next to the model card's
  MACs per decision (the floor: one MAC is at least one multiply-accumulate instruction).
Counts are of the emulated instruction set, to +-250 (4,000 repetitions timed to the guest millisecond;
a 10-million-instruction loop checks the scale); cycles on silicon differ by the
memory's wait states and the multiplier (Cortex-M3: 1-cycle MUL, no FPU: soft float).

Then the AntiJam int8 student learns its head on the MCU through a jammer switch (sweeping, then
reactive from slot 5,000; 20,000 slots driven from this host over the emulated UART), for a few
exploration seeds, next to the same student frozen: success per 500-slot window, the slots after
the switch until a window reaches 80 % of the new best (reactive: 1.0), and a PNG.

    python benchmarks/mcu.py            # ~5 min (--adapt-seeds 0: ~1.5)
Writes benchmarks/results/mcu.json and mcu.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_rl.card import model_card  # noqa: E402
from edge_rl.policy import Policy  # noqa: E402
from edge_rl.rollout import collect_states  # noqa: E402
from edge_rl.table import print_table  # noqa: E402
from export.c_header import to_c_header  # noqa: E402
from firmware_bridge.qemu import QemuError, build_firmware, count_instructions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TASKS = {"cartpole": ("CartPole-v1", {}), "antijam-sweeping": ("edge_rl/AntiJam-v0", {"jammer": "sweeping"})}
PRECISIONS = {"fp32": "none", "int8": "int8", "1-bit": "1bit"}


def student(task: str, precision: str, shaped: bool) -> Policy:
    if shaped:
        from tests.policies import make

        return make("cartpole" if task == "cartpole" else "antijam", PRECISIONS[precision].replace("none", "fp32"))
    path = RESULTS / "students" / f"{task}-{PRECISIONS[precision]}"
    if not path.exists():
        sys.exit(f"no student at {path}: run benchmarks/compression.py first, or pass --shaped")
    return Policy.load(path)


def measure(task: str, precision: str, policy: Policy, work: Path) -> dict:
    env_id, kwargs = TASKS[task]
    golden = collect_states(policy.act, env_id, 64, 0, 0.1, kwargs)
    header = work / f"{task}-{precision}.h"
    header.write_text(to_c_header(policy, golden, policy.act(golden)))
    name = f"{task}-{precision}"
    firmware = build_firmware(header, work, name)
    try:
        build_firmware(header, work, name, "budget")
        fits = True
    except QemuError:
        fits = False
    counted = count_instructions(build_firmware(header, work, name, "bench").elf)
    return {
        "task": task,
        "precision": precision,
        "macs": model_card(policy)["macs"],
        "flash": firmware.flash,
        "ram": firmware.ram,
        "fits_32k_8k": fits,
        "decision_instructions": counted.decision,
        "learning_step_instructions": counted.learning_step or None,  # 0: the header has no head section
        "update_instructions": counted.update or None,
    }


STEPS, SWITCH, WINDOW, BAR = 20_000, 5_000, 500, 0.8


def adaptation(policy: Policy, work: Path, seeds: int) -> dict:
    """Success per window of the MCU learning its head through the switch, per seed, and of the frozen student."""
    import numpy as np

    from tests.head_learning import Frozen, jammer_switch, jammer_switch_on_the_mcu

    golden = collect_states(policy.act, "edge_rl/AntiJam-v0", 64, 0, 0.1, {"jammer": "sweeping"})
    header = work / "adapt.h"
    header.write_text(to_c_header(policy, golden, policy.act(golden)))
    elf = build_firmware(header, work, "adapt").elf

    def windows(success: np.ndarray) -> list[float]:
        return [round(float(w), 4) for w in success.reshape(-1, WINDOW).mean(axis=1)]

    runs = []
    for seed in range(seeds):
        runs.append(windows(jammer_switch_on_the_mcu(elf, STEPS, SWITCH, seed)))
        print(f"  MCU learning, seed {seed}: last 5k {np.mean(runs[-1][-10:]):.3f}", flush=True)
    frozen = windows(jammer_switch(Frozen(policy), STEPS, SWITCH, 0))
    return {"window": WINDOW, "switch": SWITCH, "learning": runs, "frozen": frozen}


def summarise(adapt: dict) -> None:
    import numpy as np

    first, window = adapt["switch"] // adapt["window"], adapt["window"]
    named = [(f"MCU learning, seed {i}", c) for i, c in enumerate(adapt["learning"])] + [("frozen", adapt["frozen"])]
    rows = []
    for name, curve in named:
        after = curve[first:]
        reached = next((i * window for i, w in enumerate(after) if w >= BAR), "never")
        rows.append([name, np.mean(curve[2:first]), after[0], np.mean(after[-10:]), reached])
    print_table(["run", "before (1k-5k)", "first 500 after", "last 5k", "slots to 80 % of best"], rows)


def plot(adapt: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = (np.arange(len(adapt["frozen"])) + 1) * adapt["window"]
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, curve in enumerate(adapt["learning"]):
        ax.plot(x, curve, color="tab:blue", alpha=0.8, label="learning on the MCU" if i == 0 else None)
    ax.plot(x, adapt["frozen"], color="tab:gray", label="frozen")
    ax.axvline(adapt["switch"], color="tab:red", linestyle="--", label="sweeping -> reactive")
    ax.axhline(BAR, color="black", linewidth=0.5, linestyle=":", label="80 % of the new best")
    ax.set(xlabel="slot", ylabel=f"success per {adapt['window']} slots", ylim=(0, 1.02))
    ax.set_title("AntiJam int8 student on an emulated Cortex-M3: head learning through a jammer switch")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shaped", action="store_true", help="use the test suite's policies of the students' shapes (default: off)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "mcu.json", help="JSON output (default: %(default)s)")
    parser.add_argument(
        "--adapt-seeds", type=int, default=3, help="jammer-switch runs of on-MCU learning, 0 to skip (default: 3)"
    )
    args = parser.parse_args()
    rows = []
    adapt = None
    with tempfile.TemporaryDirectory(prefix="edgerl-mcu-") as tmp:
        for task in TASKS:
            for precision in PRECISIONS:
                rows.append(measure(task, precision, student(task, precision, args.shaped), Path(tmp)))
                print(f"  {task} {precision}: {rows[-1]['decision_instructions']:,} instructions/decision", flush=True)
        if args.adapt_seeds > 0:
            adapt = adaptation(student("antijam-sweeping", "int8", args.shaped), Path(tmp), args.adapt_seeds)
    header = ["task", "precision", "MACs", "flash B", "RAM B", "fits 32K/8K", "instr/decision", "instr/MAC"]
    header += ["instr/learning step", "instr/update"]
    print_table(
        header,
        [
            [
                r["task"],
                r["precision"],
                r["macs"],
                r["flash"],
                r["ram"],
                "yes" if r["fits_32k_8k"] else "no",
                r["decision_instructions"],
                round(r["decision_instructions"] / r["macs"], 1),
                r["learning_step_instructions"] or "-",
                r["update_instructions"] or "-",
            ]
            for r in rows
        ],
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if adapt is not None:
        summarise(adapt)
        plot(adapt, args.out.with_suffix(".png"))
    report = {"rows": rows, "adaptation": adapt, "students": "shaped" if args.shaped else "compression.py"}
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}" + (f" and {args.out.with_suffix('.png')}" if adapt else ""))


if __name__ == "__main__":
    main()
