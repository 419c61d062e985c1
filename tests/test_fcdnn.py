"""Unit tests of qlib.fcdnn: FCDNN-16's architecture, deterministic training, the shipped weights.

Nothing downstream of training is compared with the shipped file bit for bit (see
``test_retraining_matches_the_shipped_model_within_tolerance``).
"""

from __future__ import annotations

import pathlib

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
    # One forward pass of fixed weights: other CPUs' kernels move the float32 sum by ~1e-6 relative.
    assert mse == pytest.approx(float(meta["test_mse"]), rel=1e-4)


def test_retraining_is_bit_identical_within_one_environment() -> None:
    # What can be promised bit for bit: two trainings in one process, same seed, threads and
    # torch build. Across machines MKL/oneDNN pick kernels from the CPU's instruction set
    # (AVX2, AVX-512, AMX), so the last bits differ and Adam amplifies them (issue 12).
    runs = [train_digits(None, threads=1, epochs=2) for _ in range(2)]
    for (name, a), b in zip(runs[0].model.state_dict().items(), runs[1].model.state_dict().values()):
        assert torch.equal(a, b), name
    assert runs[0].losses == runs[1].losses


#: How far a retrained model's test MSE may sit from the shipped one's metadata on another CPU.
#: Measured: 0.0180-0.0182 on two x86_64 CPUs against 0.0183 shipped (1-2 %); a broken recipe
#: (wrong lr, epochs, split or initialization) lands far outside it.
RETRAIN_MSE_RTOL = 0.05


def test_retraining_matches_the_shipped_model_within_tolerance() -> None:
    res = train_digits(None, threads=1)
    _, meta = load_fcdnn()
    _, te = load_digits_data(test_size=DIGITS_RECIPE["test_size"], seed=DIGITS_RECIPE["split_seed"])
    shipped_mse = float(meta["test_mse"])
    assert reconstruction_mse(res.model, te) == pytest.approx(shipped_mse, rel=RETRAIN_MSE_RTOL)
    # and the check can fail: a recipe that learns less is well outside the tolerance
    short = train_digits(None, threads=1, epochs=3)
    assert abs(reconstruction_mse(short.model, te) / shipped_mse - 1) > RETRAIN_MSE_RTOL


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
