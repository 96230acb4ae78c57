"""On-device learning: stream Q(lambda) in numpy (no torch, no replay buffer, constant memory)."""

from edge_rl.stream.learner import StreamQ

__all__ = ["StreamQ"]
