"""On-device learning: stream Q(lambda) in numpy (no torch, no replay buffer, constant memory).

    learner = StreamQ(obs_dim, n_actions)            # from scratch
    learner = from_policy(policy, "head")             # adapting a deployed policy (or "full")
    action = learner.act(obs); learner.observe(reward, next_obs, terminated, truncated)
    save_state(learner, directory); learner = load_state(directory, policy)
    learner.to_policy()                               # back to the IR, to export again

`edge_rl.stream.simulate` runs a learner in a Gymnasium env (the only module here that needs it).
"""

from edge_rl.stream.adapt import HeadStreamQ, from_policy
from edge_rl.stream.learner import StreamQ
from edge_rl.stream.state import load_state, restore, save_state

__all__ = ["HeadStreamQ", "StreamQ", "from_policy", "load_state", "restore", "save_state"]
