"""Adam on one flat parameter tensor: five in-place tensor ops per step.

`torch.optim.Adam` does the same arithmetic (Kingma & Ba 2015, with bias correction) but its
Python-side bookkeeping costs more than the math for a few thousand parameters. A test checks
this against torch.optim.Adam step for step.
"""

from __future__ import annotations

import torch


class FlatAdam:
    """Adam with bias correction for a single flat tensor, updated in place."""

    def __init__(self, numel: int, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.m = torch.zeros(numel)
        self.v = torch.zeros(numel)
        self.t = 0

    @torch.no_grad()
    def step(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        self.t += 1
        self.m.lerp_(grad, 1.0 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(grad, grad, value=1.0 - self.beta2)
        bias1 = 1.0 - self.beta1**self.t
        bias2_sqrt = (1.0 - self.beta2**self.t) ** 0.5
        denom = (self.v.sqrt() / bias2_sqrt).add_(self.eps)
        param.addcdiv_(self.m, denom, value=-self.lr / bias1)
