"""The hand-written backward pass and flat Adam against torch autograd and torch.optim.Adam."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_rl.train.optim import FlatAdam  # noqa: E402
from edge_rl.train.qnet import Arch, FlatQNet  # noqa: E402

ARCHS = [
    Arch(5, 3, (16, 8)),
    Arch(5, 3, (16, 8), layernorm=True),
    Arch(5, 4, (12,), activation="leaky_relu", dueling=True),
    Arch(6, 2, (8, 8, 8), layernorm=True, activation="leaky_relu", dueling=True),
]


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"ln{int(a.layernorm)}-{a.activation}-duel{int(a.dueling)}")
def test_manual_backward_matches_autograd(arch: Arch) -> None:
    net = FlatQNet(arch, torch.Generator().manual_seed(0))
    with torch.no_grad():  # move LayerNorm gains/biases off their trivial init
        net.theta.add_(0.1 * torch.randn(net.theta.shape, generator=torch.Generator().manual_seed(1)))
    x = torch.randn(32, arch.obs_dim, generator=torch.Generator().manual_seed(2))
    dq = torch.randn(32, arch.n_actions, generator=torch.Generator().manual_seed(3))

    tape: list = []
    q = net.forward(net.p, x, tape)
    manual = net.backward(tape, dq).clone()

    theta = net.theta.clone().requires_grad_(True)
    q_ref = net.forward(net.views(theta), x)
    (q_ref * dq).sum().backward()
    assert torch.allclose(q, q_ref.detach(), atol=1e-6)
    assert torch.allclose(manual, theta.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS[:3])
def test_numpy_forward_matches_torch(arch: Arch) -> None:
    net = FlatQNet(arch, torch.Generator().manual_seed(0))
    x = np.random.default_rng(0).normal(size=(10, arch.obs_dim)).astype(np.float32)
    expect = net.forward(net.p, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.q_numpy(x), expect, atol=1e-5)


def test_flat_adam_matches_torch_adam() -> None:
    gen = torch.Generator().manual_seed(0)
    ours = torch.randn(50, generator=gen)
    ref = ours.clone().requires_grad_(True)
    adam, torch_adam = FlatAdam(50, lr=1e-2), torch.optim.Adam([ref], lr=1e-2)
    for _ in range(20):
        grad = torch.randn(50, generator=gen)
        adam.step(ours, grad)
        ref.grad = grad.clone()
        torch_adam.step()
    assert torch.allclose(ours, ref.detach(), atol=1e-6)


def test_ir_round_trip_keeps_q_values(tmp_path) -> None:
    from edge_rl.policy import ActionSpec, ObservationSpec, Policy

    arch = Arch(4, 2, (16, 16), layernorm=True, dueling=True)
    net = FlatQNet(arch, torch.Generator().manual_seed(0))
    obs = ObservationSpec.unnormalized(np.full(4, -1.0), np.full(4, 1.0))
    net.to_policy(obs, ActionSpec(2)).save(tmp_path)
    loaded = Policy.load(tmp_path)
    x = np.random.default_rng(1).uniform(-1, 1, size=(8, 4)).astype(np.float32)
    np.testing.assert_allclose(loaded.q_values(x), net.q_numpy(x), atol=1e-5)
    again = FlatQNet.from_policy(loaded)  # dueling comes back folded into a plain head
    np.testing.assert_allclose(again.q_numpy(x), net.q_numpy(x), atol=1e-5)
