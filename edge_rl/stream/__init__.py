"""On-device learning: stream Q(lambda) in numpy (no torch, no replay buffer, constant memory)."""

from edge_rl.stream.learner import StreamQ, td_update

__all__ = ["StreamQ", "td_update"]
