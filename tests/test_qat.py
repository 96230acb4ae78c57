"""QuEST fake quantization (torch) against the deploy layers (numpy), and the trust estimator."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_rl.layers import Dense  # noqa: E402
from edge_rl.qlayers import BINARY_SCALE  # noqa: E402
from quantize.binary import binary_dense, rotated_weight  # noqa: E402
from quantize.int8 import quantize_weights, split_value_row  # noqa: E402
from quantize.qat import (  # noqa: E402
    TRUST_1BIT,
    BinaryLinear,
    fake_quant_activation,
    fake_quant_split_head,
    fake_quant_weight,
    trust_binarize,
)


def test_trust_mask_passes_gradient_only_near_the_grid() -> None:
    x = torch.tensor([[0.1, -0.5, 1.0, 1.7, -2.5, 3.0, 0.0, -0.2]], requires_grad=True)
    q = trust_binarize(x, trust=TRUST_1BIT)
    rms = float(x.detach().pow(2).mean().sqrt())
    np.testing.assert_allclose(q.detach().abs().numpy(), BINARY_SCALE * rms, rtol=1e-6)
    assert float(q.detach()[0, 6]) > 0  # sign(0) = +1
    q.sum().backward()
    expected = (
        np.abs(np.sign(x.detach().numpy() + (x.detach().numpy() == 0)) * BINARY_SCALE * rms - x.detach().numpy())
        <= TRUST_1BIT * rms
    )
    np.testing.assert_array_equal(x.grad.numpy()[0], expected[0].astype(np.float32))
    assert 0 < x.grad.sum() < 8  # some elements trusted, the far outliers (|x| > ~1.84 rms) not


def test_fake_quant_signs_and_outputs_match_the_deploy_layer() -> None:
    torch.manual_seed(0)
    layer = BinaryLinear(40, 48, seed=11)  # 40 inputs pad to 64
    x = torch.relu(torch.randn(300, 40))
    deploy = binary_dense(Dense(layer.weight.detach().numpy(), layer.bias.detach().numpy()), seed=11)
    torch_signs = layer.rotate(layer.weight).detach().numpy() >= 0
    np.testing.assert_array_equal(torch_signs, rotated_weight(layer.weight.detach().numpy(), 11) >= 0)
    np.testing.assert_array_equal(layer.rotate(x).numpy() >= 0, deploy.rotate(x.numpy()) >= 0)
    with torch.no_grad():
        np.testing.assert_allclose(layer(x).numpy(), deploy.forward(x.numpy()), rtol=1e-5, atol=1e-5)


def test_int8_fake_quant_matches_the_ptq_codes() -> None:
    w = torch.randn(16, 12)
    codes, scale = quantize_weights(w.numpy())
    np.testing.assert_allclose(fake_quant_weight(w).detach().numpy(), codes * scale[:, None], rtol=1e-6, atol=1e-7)
    x = torch.linspace(-3, 5, 101, requires_grad=True)
    y = fake_quant_activation(x, scale=0.02, zero_point=-28)  # covers [-2, 3.1]
    y.sum().backward()
    assert torch.all(x.grad[(x > -1.9) & (x < 3.0)] == 1) and torch.all(x.grad[(x < -2.1) | (x > 3.2)] == 0)
    assert float(y.detach().max()) == pytest.approx(155 * 0.02) and float(y.detach().min()) == pytest.approx(
        -100 * 0.02
    )


def test_split_head_fake_quant_is_the_stored_head() -> None:
    torch.manual_seed(1)
    w = 1.0 + 0.01 * torch.randn(5, 24)  # rows share most of their weight, as Q heads do
    split, _ = split_value_row(w.numpy(), np.zeros(5, np.float32))
    codes, scale = quantize_weights(split)
    stored = codes * scale[:, None]
    fq = fake_quant_split_head(w.requires_grad_()).detach().numpy()
    np.testing.assert_allclose(fq, stored[:1] + stored[1:], rtol=1e-5, atol=1e-6)
    # and far finer than one scale per full row: the per-action differences survive
    full = fake_quant_weight(w).detach().numpy()
    diff = (w - w.mean(0)).detach().numpy()
    assert np.abs(fq - fq.mean(0) - diff).max() < 0.1 * np.abs(full - full.mean(0) - diff).max()
