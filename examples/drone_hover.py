"""The drone, end to end: a Hover policy trained, compressed, signed, deployed, and its battery sagging in flight.

    python examples/drone_hover.py                     # a few minutes on 2 cores
    python examples/drone_hover.py --adapt off         # the same with a frozen policy, for comparison

The same story as examples/radio_antijam.py with `edge-rl device edge_rl/Hover-v0` as the drone (there is no C
simulator of it): a DQN teacher on Hover-v0 with a fresh battery -> an int8 student -> a signed, verified bundle ->
the embedded broker and the fleet monitor -> the daemon adapting online against the drone on a pty, whose battery
sags from --switch-at on (every thrust level loses up to 60 % over each episode) -> the mean reward per step from the
telemetry (1 - altitude error, minus thrust changes; a crash costs more), the drone's true success rate (within
tolerance of the target altitude) and runs/drone/drone.png. A sagging battery costs the frozen policy some of its
hold; whether adapting wins that back depends on the seed: the summary says what happened, nothing is asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from story import Scenario, python_device_story

DRONE = Scenario(
    name="drone",
    env="edge_rl/Hover-v0",
    kwargs={"battery_sag": 0.0},
    shift={"battery_sag": 0.6},
    metric="reward_mean",
    metric_label="mean reward per step",
    train_steps=60_000,
)

if __name__ == "__main__":
    raise SystemExit(python_device_story(DRONE, __doc__))
