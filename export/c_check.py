"""Compile a `policy.h` with the system C compiler and run it on observations: the header checked like any runtime.

Used by the tests and `benchmarks/inference.py` (the training box has `cc`; a device never runs this).
The harness is strict C99 (-Wall -Wextra -Werror -pedantic): a header that warns fails.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from export import ExportError

HARNESS = r"""#include <stdio.h>
#include "policy.h"
int main(void) {
    float obs[EDGE_RL_OBS_SIZE], q[EDGE_RL_N_ACTIONS];
    int k;
    printf("%d\n", edge_rl_self_test());
    for (;;) {
        for (k = 0; k < EDGE_RL_OBS_SIZE; ++k) if (scanf("%f", &obs[k]) != 1) return 0;
        edge_rl_q_values(obs, q);
        for (k = 0; k < EDGE_RL_N_ACTIONS; ++k) printf("%.9g ", q[k]);
        printf("%d\n", edge_rl_act(obs));
    }
}
"""
FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2")


def run_header(header: str, observations: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(self-test mismatches, Q-values (N, n) float32, actions (N,)) of the compiled header on `observations`.

    Values cross as 9-significant-digit text, which round-trips float32 exactly.
    """
    obs = np.asarray(observations, np.float32).reshape(len(observations), -1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "policy.h").write_text(header)
        (work / "main.c").write_text(HARNESS)
        build = subprocess.run(["cc", *FLAGS, "-o", "run", "main.c", "-lm"], cwd=work, capture_output=True, text=True)
        if build.returncode != 0:
            raise ExportError(f"policy.h does not compile: {build.stderr.strip().splitlines()[0]}")
        text = "\n".join(" ".join(f"{v:.9g}" for v in row) for row in obs) + "\n"
        out = subprocess.run([str(work / "run")], input=text, capture_output=True, text=True, timeout=300, check=True)
    first, *rows = out.stdout.splitlines()
    table = np.array([row.split() for row in rows], dtype=np.float64).reshape(len(rows), -1)
    return int(first), table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64)
