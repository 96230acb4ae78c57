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
Instruction counts are exact for the emulated instruction set; cycles on silicon differ by the
memory's wait states and the multiplier (Cortex-M3: 1-cycle MUL, no FPU: soft float).

    python benchmarks/mcu.py            # ~1 min
Writes benchmarks/results/mcu.json.
"""

from __future__ import annotations

import argparse
import json
import re
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
from firmware_bridge.qemu import QemuError, boot, build_firmware  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TASKS = {"cartpole": ("CartPole-v1", {}), "antijam-sweeping": ("edge_rl/AntiJam-v0", {"jammer": "sweeping"})}
PRECISIONS = {"fp32": "none", "int8": "int8", "1-bit": "1bit"}
BENCH = re.compile(r"bench n=(\d+) decide_ms=(\d+) features_ms=(\d+) learn_ms=(\d+)")


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
    with boot(build_firmware(header, work, name, "bench").elf, 0, count_instructions=True) as machine:
        machine.wait(300)
    found = BENCH.search(machine.console)
    if found is None:
        raise QemuError(f"no bench line from the firmware: {machine.console.strip()[-200:]}")
    n, decide, features, learn = map(int, found.groups())
    per = 1e6 / n  # a guest millisecond is a million instructions; per repetition
    return {
        "task": task,
        "precision": precision,
        "macs": model_card(policy)["macs"],
        "flash": firmware.flash,
        "ram": firmware.ram,
        "fits_32k_8k": fits,
        "decision_instructions": round(decide * per),
        "learning_step_instructions": round(learn * per) if learn else None,  # 0: the header has no head learning
        "update_instructions": round((learn - features) * per) if learn else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shaped", action="store_true", help="use the test suite's policies of the students' shapes (default: off)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "mcu.json", help="JSON output (default: %(default)s)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgerl-mcu-") as tmp:
        for task in TASKS:
            for precision in PRECISIONS:
                rows.append(measure(task, precision, student(task, precision, args.shaped), Path(tmp)))
                print(f"  {task} {precision}: {rows[-1]['decision_instructions']:,} instructions/decision", flush=True)
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
    args.out.write_text(json.dumps({"rows": rows, "students": "shaped" if args.shaped else "compression.py"}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
