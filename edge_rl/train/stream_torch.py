"""Stream Q(lambda) in torch, written from the same specification as `edge_rl.stream` (autograd).

The oracle of the equivalence tests and the peer of `benchmarks/stream_q.py`; never used on a
device. Same API as `edge_rl.stream.StreamQ` (act / observe), the same normalisers (plain
streaming statistics), the same action stream (one uniform per step, one integer when
exploring, from `RandomState(seed)`); the network, its gradients and the update are torch's.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import torch
from torch import nn

from edge_rl.stream.normalize import ObservationNormalizer, RewardScaler


class TorchStreamNet(nn.Module):
    """Linear -> LayerNorm (no affine) -> LeakyReLU(0.01) per hidden layer, linear Q head."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))

    def sparse_init(self, generator: torch.Generator, sparsity: float = 0.9) -> None:
        with torch.no_grad():
            for linear in self.linears:
                fan_in = linear.in_features
                bound = 1.0 / math.sqrt(fan_in)
                linear.weight.uniform_(-bound, bound, generator=generator)
                zeros = math.ceil(sparsity * fan_in)
                for row in linear.weight:
                    row[torch.randperm(fan_in, generator=generator)[:zeros]] = 0.0
                linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear in self.linears[:-1]:
            x = nn.functional.layer_norm(linear(x), (linear.out_features,), eps=1e-5)
            x = nn.functional.leaky_relu(x, 0.01)
        return self.linears[-1](x)


class TorchStreamQ:
    """The torch learner; with `record=True`, `step_record` holds the last update's inputs and outputs
    (the equivalence tests' fixture; off by default, so benchmarks time the algorithm alone)."""

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden: tuple[int, ...] = (32, 32),
        gamma: float = 0.99,
        lam: float = 0.8,
        kappa: float = 2.0,
        lr: float = 1.0,
        eps_start: float = 1.0,
        eps_end: float = 0.01,
        eps_decay_steps: int = 25_000,
        raw_tail: int = 0,
        seed: int = 0,
        record: bool = False,
    ) -> None:
        torch.set_num_threads(1)
        self.record = record
        self.n_actions, self.gamma, self.lam, self.kappa, self.lr = n_actions, gamma, lam, kappa, lr
        self.eps_start, self.eps_end, self.eps_decay_steps = eps_start, eps_end, eps_decay_steps
        self.net = TorchStreamNet([obs_dim, *hidden, n_actions])
        self.net.sparse_init(torch.Generator().manual_seed(seed))
        self.traces = [torch.zeros_like(p) for p in self.net.parameters()]
        self.normalizer = ObservationNormalizer(obs_dim, raw_tail)
        self.rewards = RewardScaler(gamma)
        self.rng = np.random.RandomState(seed)
        self.steps = 0
        self.state: torch.Tensor | None = None
        self.raw: np.ndarray | None = None
        self.pending: tuple[torch.Tensor, int, bool] | None = None
        self.step_record: dict = {}

    @property
    def epsilon(self) -> float:
        frac = self.steps / self.eps_decay_steps
        return max(self.eps_start + (self.eps_end - self.eps_start) * frac, self.eps_end)

    def act(self, obs: np.ndarray) -> int:
        x = np.asarray(obs, np.float64).ravel()
        if self.state is None or not np.array_equal(x, self.raw):
            self.state, self.raw = torch.from_numpy(self.normalizer(x)), x
        self.steps += 1
        q = self.net(self.state)
        greedy = int(torch.argmax(q))
        action, nongreedy = greedy, False
        if self.rng.random_sample() < self.epsilon:
            action = int(self.rng.randint(self.n_actions))
            nongreedy = action != greedy
        self.pending = (q, action, nongreedy)
        return action

    def observe(self, reward: float, next_obs: np.ndarray, terminated: bool, truncated: bool) -> float:
        q, action, nongreedy = self.pending
        x = np.asarray(next_obs, np.float64).ravel()
        done = bool(terminated or truncated)
        next_state = torch.from_numpy(self.normalizer(x))
        r = self.rewards(float(reward), done)
        params = list(self.net.parameters())
        before = None
        if self.record:
            before = {
                "theta": [p.detach().clone() for p in params],
                "trace": [z.clone() for z in self.traces],
                "state": self.state.clone(),
                "q": q.detach().clone(),
                "action": action,
                "reward": r,
                "next_state": next_state.clone(),
                "done": done,
                "nongreedy": nongreedy,
            }
        delta = self.update(q, action, r, next_state, done, nongreedy)
        if before is not None:
            before.update(
                delta=delta,
                alpha=self.alpha,
                theta_after=[p.detach().clone() for p in params],
                trace_after=[z.clone() for z in self.traces],
            )
            self.step_record = before
        self.state, self.raw = (None, None) if done else (next_state, x)
        return delta

    def update(
        self, q: torch.Tensor, action: int, reward: float, next_state: torch.Tensor, done: bool, nongreedy: bool
    ) -> float:
        """Semi-gradient TD error, accumulating trace, ObGD-bounded step, trace reset after the update."""
        params = list(self.net.parameters())
        with torch.no_grad():
            bootstrap = 0.0 if done else float(self.net(next_state).max())
        delta = reward + self.gamma * bootstrap - float(q[action].detach())
        grads = torch.autograd.grad(q[action], params)
        with torch.no_grad():
            for z, g in zip(self.traces, grads, strict=True):
                z.mul_(self.gamma * self.lam).add_(g)
            z_norm = sum(float(z.abs().sum()) for z in self.traces)
            self.alpha = self.lr / max(1.0, self.lr * self.kappa * max(abs(delta), 1.0) * z_norm)
            for p, z in zip(params, self.traces, strict=True):
                p.add_(z, alpha=self.alpha * delta)
            if done or nongreedy:
                for z in self.traces:
                    z.zero_()
        return delta
