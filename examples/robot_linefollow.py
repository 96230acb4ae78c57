"""The robot, end to end: a LineFollow policy trained, compressed, signed, deployed, and its right wheel wearing.

    python examples/robot_linefollow.py                # a few minutes on 2 cores
    python examples/robot_linefollow.py --adapt off    # the same with a frozen policy, for comparison

The same story as examples/radio_antijam.py with `edge-rl device edge_rl/LineFollow-v0` as the robot (there is no C
simulator of it): a DQN teacher on LineFollow-v0 with new wheels -> an int8 student -> a signed, verified bundle ->
the embedded broker and the fleet monitor -> the daemon adapting online against the robot on a pty, whose right
wheel runs 30 % slow from --switch-at on (driving "straight" now curves right) -> the mean reward per step from
the telemetry (progress along the line, minus lateral error; leaving the track costs more), the robot's true
success rate (on the line within tolerance) and runs/robot/robot.png. Worn wheels slow the frozen policy down;
whether adapting wins that back depends on the seed: the summary says what happened, nothing is asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from story import Scenario, python_device_story

ROBOT = Scenario(
    name="robot",
    env="edge_rl/LineFollow-v0",
    kwargs={"wear": 0.0},
    shift={"wear": 0.3},
    metric="reward_mean",
    metric_label="mean reward per step",
    train_steps=60_000,
)

if __name__ == "__main__":
    raise SystemExit(python_device_story(ROBOT, __doc__))
