"""edge-rl target environments, registered with Gymnasium on import.

>>> import gymnasium as gym, edge_rl.envs
>>> env = gym.make("edge_rl/AntiJam-v0", jammer="reactive")
"""

from __future__ import annotations

import gymnasium as gym

from edge_rl.envs import antijam, hover, linefollow
from edge_rl.envs.antijam import AntiJamEnv
from edge_rl.envs.hover import HoverEnv
from edge_rl.envs.linefollow import LineFollowEnv

ENV_IDS: dict[str, tuple[str, int]] = {
    "edge_rl/AntiJam-v0": ("edge_rl.envs.antijam:AntiJamEnv", antijam.EPISODE_STEPS),
    "edge_rl/Hover-v0": ("edge_rl.envs.hover:HoverEnv", hover.EPISODE_STEPS),
    "edge_rl/LineFollow-v0": ("edge_rl.envs.linefollow:LineFollowEnv", linefollow.EPISODE_STEPS),
}


def register_envs() -> None:
    """Register every env once; safe to call repeatedly (e.g. after importlib.reload)."""
    for env_id, (entry_point, steps) in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=steps)


register_envs()

__all__ = ["ENV_IDS", "AntiJamEnv", "HoverEnv", "LineFollowEnv", "register_envs"]
