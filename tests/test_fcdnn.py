"""Unit tests of qlib.fcdnn: FCDNN-16's architecture, deterministic training, the shipped weights."""

from __future__ import annotations

import pathlib
import platform

import numpy as np
import pytest
import torch

from qlib.distortion import relu_chain_weights
from qlib.fcdnn import (
    DEFAULT_WEIGHTS,
    DIGITS_RECIPE,
    fcdnn16,
    l1_normalize,
    layer_dims,
    load_digits_data,
    load_fcdnn,
    load_mnist,
    reconstruction_mse,
    save_fcdnn,
    train_digits,
    train_fcdnn,
)


def test_architecture_is_16_bias_free_layers_of_eq_10() -> None:
    assert layer_dims(64) == [64, 64, 128, 256, 512, 256, 128, 64, 32, 64, 128, 256, 512, 256, 128, 64, 64]
    net = fcdnn16(784, seed=0)
    Ws = relu_chain_weights(net)  # raises unless Linear/ReLU/…/Linear without biases
    assert len(Ws) == 16
    assert Ws[0].shape == (64, 784) and Ws[7].shape == (32, 64) and Ws[-1].shape == (784, 64)
    assert not isinstance(net[-1], torch.nn.ReLU)
    with pytest.raises(ValueError, match="in_features"):
        fcdnn16(0)


def test_seeded_init_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    a = torch.rand(1)
    torch.manual_seed(123)
    n1 = fcdnn16(seed=5)
    b = torch.rand(1)
    assert torch.equal(a, b)
    assert torch.equal(n1[0].weight, fcdnn16(seed=5)[0].weight)
    assert not torch.equal(n1[0].weight, fcdnn16(seed=6)[0].weight)


def test_digits_data_split_and_l1_normalization() -> None:
    tr, te = load_digits_data()
    assert tr.shape == (1500, 64) and te.shape == (297, 64)
    assert float(tr.min()) >= 0 and float(tr.max()) <= 1
    xn = l1_normalize(te)
    np.testing.assert_allclose(xn.abs().sum(dim=1).numpy(), 1.0, rtol=1e-6)
    assert torch.equal(l1_normalize(torch.zeros(2, 3)), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="test_size"):
        load_digits_data(test_size=0)


def test_training_is_deterministic_and_learns() -> None:
    X = load_digits_data()[0][:256]
    r1 = train_fcdnn(X, epochs=3, seed=1)
    r2 = train_fcdnn(X, epochs=3, seed=1)
    r3 = train_fcdnn(X, epochs=3, seed=2)
    for a, b in zip(r1.model.parameters(), r2.model.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(r1.model[0].weight, r3.model[0].weight)
    assert r1.losses == r2.losses and r1.losses[-1] < r1.losses[0]
    with pytest.raises(ValueError, match="epochs"):
        train_fcdnn(X, epochs=0)
    with pytest.raises(ValueError, match="lr"):
        train_fcdnn(X, lr=0.0)
    with pytest.raises(ValueError, match="recipe"):
        train_digits(None, momentum=0.9)


def test_shipped_weights_load_small_and_reconstruct_better_than_the_mean() -> None:
    assert DEFAULT_WEIGHTS.stat().st_size < 5 * 2**20
    model, meta = load_fcdnn()
    assert meta["dataset"] == "sklearn-digits-8x8" and int(meta["epochs"]) == DIGITS_RECIPE["epochs"]
    tr, te = load_digits_data(test_size=DIGITS_RECIPE["test_size"], seed=DIGITS_RECIPE["split_seed"])
    mse = reconstruction_mse(model, te)
    baseline = float(((te - tr.mean(dim=0)) ** 2).mean())  # predicting the mean image
    assert mse < 0.4 * baseline
    assert mse == pytest.approx(float(meta["test_mse"]), rel=1e-4)


def test_retraining_reproduces_the_shipped_weights() -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)
    res = train_digits(None, threads=1)
    shipped, meta = load_fcdnn()
    same_build = meta["torch"] == torch.__version__ and meta["machine"] == platform.machine()
    for (name, a), b in zip(res.model.state_dict().items(), shipped.state_dict().values()):
        if same_build:
            assert torch.equal(a, b), name  # bit for bit
        else:  # pragma: no cover - another torch build may sum in another order
            assert torch.allclose(a, b, rtol=1e-2, atol=1e-3), name


def test_save_load_roundtrip_and_mnist_reader(tmp_path: pathlib.Path) -> None:
    net = fcdnn16(64, seed=3)
    p = save_fcdnn(net, tmp_path / "m.safetensors", {"note": "x"})
    back, meta = load_fcdnn(p)
    assert meta["note"] == "x" and meta["in_features"] == "64"
    for a, b in zip(net.parameters(), back.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="path"):
        load_fcdnn(tmp_path / "missing.safetensors")
    npz = tmp_path / "mnist.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, x_train=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
             x_test=rng.integers(0, 256, (3, 28, 28), dtype=np.uint8))
    tr, te = load_mnist(npz)
    assert tr.shape == (5, 784) and te.shape == (3, 784) and float(tr.max()) <= 1.0
    with pytest.raises(ValueError, match="mnist_path"):
        load_mnist(tmp_path / "nope.npz")
