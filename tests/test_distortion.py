"""Unit tests of qlib.distortion: Prop. 3.1 (property test over random networks), H, Taylor view."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch

from qlib.distortion import (
    data_driven_H,
    distortion_sweep,
    layer_coefficients,
    matrix_norm,
    output_distortion,
    prop31_bound,
    relu_chain_weights,
    relu_network,
    taylor_check,
    tight_from,
)
from qlib.quantize import quantize, quantize_module


Bound = Callable[[list[np.ndarray], list[np.ndarray]], float]


def _no_tau_bound(Ws: list[np.ndarray], Qs: list[np.ndarray]) -> float:
    """A deliberately wrong bound: eq. (14) with the tau terms dropped."""
    err = np.array([matrix_norm(W - Q) for W, Q in zip(Ws, Qs)])
    return float(np.sum(layer_coefficients(Ws, np.zeros(len(Ws))) * err))


def _violations(bound: Bound, n_networks: int = 1000, seed: int = 0) -> int:
    """Seeded search over random ReLU networks and inputs with ||x||_1 <= 1 for bound < distortion.

    Networks: depth 1-6, widths 1-16, Gaussian or non-negative weights of random scale, both
    quantizers at a random bit-width 1-8. Inputs: the signed unit vectors (the extreme points
    of the L1 ball, where the induced norm is attained) and random points inside the ball.
    """
    rng = np.random.default_rng(seed)
    found = 0
    for i in range(n_networks):
        depth = int(rng.integers(1, 7))
        widths = [int(rng.integers(1, 17)) for _ in range(depth + 1)]
        Ws = [rng.standard_normal((widths[l + 1], widths[l])) * rng.uniform(0.1, 2.0) for l in range(depth)]
        if i % 4 >= 2:
            Ws = [np.abs(W) for W in Ws]  # ReLU is then the identity: errors add up coherently
        scheme = ("uniform", "pot")[i % 2]
        b = int(rng.integers(1, 9))
        Qs = [quantize(torch.from_numpy(W), b, scheme).numpy() for W in Ws]
        n0 = widths[0]
        R = rng.standard_normal((16, n0))
        R *= rng.uniform(0.0, 1.0, (16, 1)) / np.abs(R).sum(axis=1, keepdims=True)
        X = np.concatenate([np.eye(n0), -np.eye(n0), R, np.abs(R)])
        assert np.all(np.abs(X).sum(axis=1) ** 2 <= 1 + 1e-12)  # Assumption 1
        out = np.abs(relu_network(X, Ws) - relu_network(X, Qs)).sum(axis=1).max()
        if out > bound(Ws, Qs) * (1 + 1e-9) + 1e-12:
            found += 1
    return found


@pytest.mark.parametrize("norm", ["induced", "entrywise"])
def test_prop31_never_violated_on_1000_random_networks(norm: str) -> None:
    assert _violations(lambda W, Q: prop31_bound(W, Q, norm)) == 0


def test_same_search_catches_a_bound_without_tau_terms() -> None:
    assert _violations(_no_tau_bound) > 0


def test_same_search_catches_a_bound_missing_a_layer() -> None:
    def drops_first_layer(Ws: list[np.ndarray], Qs: list[np.ndarray]) -> float:
        return prop31_bound(Ws[1:], Qs[1:]) if len(Ws) > 1 else 0.0

    assert _violations(drops_first_layer, n_networks=200) > 0


def test_scalar_chain_bound_is_exact() -> None:
    # 1x1 layers with positive weights and positive errors: eq. (13) telescopes to equality.
    w = [0.5, 2.0, 1.5]
    q = [0.75, 2.5, 2.0]
    Ws = [np.array([[v]]) for v in w]
    Qs = [np.array([[v]]) for v in q]
    out = abs(np.prod(q) - np.prod(w))
    assert prop31_bound(Ws, Qs) == pytest.approx(out)
    assert _no_tau_bound(Ws, Qs) < out


def test_matrix_norms_and_their_order() -> None:
    W = np.array([[1.0, -2.0], [3.0, 0.5]])
    assert matrix_norm(W, "induced") == 4.0  # column sums 4 and 2.5
    assert matrix_norm(W, "entrywise") == 6.5
    Q = np.zeros_like(W)
    assert prop31_bound([W, W], [Q, Q], "induced") <= prop31_bound([W, W], [Q, Q], "entrywise")
    with pytest.raises(ValueError, match="norm"):
        matrix_norm(W, "frobenius")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D"):
        matrix_norm(np.ones(3))


def test_layer_coefficients_formula() -> None:
    Ws = [np.diag([2.0, 1.0]), np.diag([3.0, 1.0]), np.diag([5.0, 1.0])]
    A = layer_coefficients(Ws, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(A, [(3 + 0.2) * (5 + 0.3), 2 * (5 + 0.3), 2 * 3])
    with pytest.raises(ValueError, match="taus"):
        layer_coefficients(Ws, [0.1, 0.2])
    with pytest.raises(ValueError, match="taus"):
        layer_coefficients(Ws, [0.1, -0.2, 0.3])


def test_prop31_rejects_taus_below_the_error_and_scales_with_input_norm() -> None:
    rng = np.random.default_rng(1)
    Ws = [rng.standard_normal((4, 3)), rng.standard_normal((2, 4))]
    Qs = [quantize(torch.from_numpy(W), 2).numpy() for W in Ws]
    with pytest.raises(ValueError, match="Assumption 3"):
        prop31_bound(Ws, Qs, taus=[0.0, 0.0])
    assert prop31_bound(Ws, Qs, taus=[10.0, 10.0]) > prop31_bound(Ws, Qs)
    assert prop31_bound(Ws, Qs, input_norm=3.0) == pytest.approx(3 * prop31_bound(Ws, Qs))
    with pytest.raises(ValueError, match="input_norm"):
        prop31_bound(Ws, Qs, input_norm=-1.0)


def _chain(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8, bias=False), torch.nn.ReLU(),
                               torch.nn.Linear(8, 5, bias=False), torch.nn.ReLU(),
                               torch.nn.Linear(5, 3, bias=False))


def test_relu_chain_weights_checks_the_form_of_eq_10() -> None:
    net = _chain()
    assert [tuple(W.shape) for W in relu_chain_weights(net)] == [(8, 6), (5, 8), (3, 5)]
    assert len(relu_chain_weights(torch.nn.Linear(3, 2, bias=False))) == 1
    with pytest.raises(ValueError, match="bias"):
        relu_chain_weights(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    with pytest.raises(ValueError, match="layer sequence"):
        relu_chain_weights(torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False), torch.nn.Tanh(),
                                               torch.nn.Linear(2, 2, bias=False)))
    with pytest.raises(ValueError, match="layer sequence"):
        relu_chain_weights(torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False), torch.nn.ReLU()))


def test_relu_network_matches_torch() -> None:
    net = _chain().double()
    x = torch.randn(7, 6, dtype=torch.float64)
    ref = net(x).detach().numpy()
    np.testing.assert_allclose(relu_network(x.numpy(), relu_chain_weights(net)), ref, rtol=1e-12)


def test_output_distortion_and_sweep_hold_the_bound() -> None:
    net = _chain()
    g = torch.Generator().manual_seed(0)
    X = torch.randn(32, 6, generator=g)
    X = X / X.abs().sum(dim=1, keepdim=True)
    loader = [X[:16], (X[16:],)]  # a bare tensor and a tuple batch
    qnet, _ = quantize_module(net, 3, "pot")
    with torch.no_grad():
        want = float((net(X) - qnet(X)).abs().sum(dim=1).mean())
    assert output_distortion(net, qnet, loader) == pytest.approx(want, rel=1e-6)
    pts = distortion_sweep(net, loader, [1, 2, 4, 8])
    assert [(p.scheme, p.bit_width) for p in pts][:2] == [("uniform", 1), ("uniform", 2)]
    for p in pts:
        assert p.bound is not None and p.output_distortion <= p.bound
        assert p.param_distortion == pytest.approx(sum(p.layer_distortion.values()))
    with pytest.raises(ValueError, match="no samples"):
        output_distortion(net, qnet, [])
    with pytest.raises(ValueError, match="batch"):
        output_distortion(net, qnet, ["text"])


def test_sweep_on_a_model_with_biases_skips_the_bound() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    pts = distortion_sweep(net, [torch.randn(8, 4)], [2, 6], schemes=["uniform"])
    assert all(p.bound is None for p in pts)
    assert pts[0].output_distortion > pts[1].output_distortion > 0


def test_data_driven_H_is_the_smallest_valid_constant() -> None:
    o = np.array([4.0, 1.0, 0.3])
    d = np.array([2.0, 0.4, 0.1])
    H = data_driven_H(o, d)
    assert H == pytest.approx(3.0)
    assert np.all(o <= H * d + 1e-12)
    assert np.any(o > 0.99 * H * d)  # a smaller H would fail somewhere
    assert data_driven_H([0.0, 1.0], [0.0, 1.0]) == 1.0
    with pytest.raises(ValueError, match="no finite H"):
        data_driven_H([1.0], [0.0])
    with pytest.raises(ValueError, match="equal length"):
        data_driven_H([1.0, 2.0], [1.0])


def test_tight_from() -> None:
    bits = [1, 2, 3, 4, 5]
    s = np.array([10.0, 5.0, 2.0, 1.0, 0.5])
    assert tight_from(bits, [1.0, 4.0, 0.5, 0.9, 0.45], s) == 4
    assert tight_from(bits, s, s) == 1
    assert tight_from(bits, s * 0.1, s) is None
    with pytest.raises(ValueError, match="ratio"):
        tight_from(bits, s, s, ratio=0.0)
    with pytest.raises(ValueError, match="increasing"):
        tight_from([2, 1, 3, 4, 5], s, s)


def test_taylor_first_order_error_vanishes_with_bit_width() -> None:
    net = _chain()
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(2))
    pts = taylor_check(net, "2.weight", x, [2, 4, 8, 12], "uniform")
    assert pts[-1].rel_error < 1e-2
    assert pts[-1].rel_error <= pts[0].rel_error
    for p in pts:
        # eq. (17) to first order: ||J dW||_1 <= H_grad ||dW||_1
        assert p.linear <= p.gradient_H * p.param_distortion * (1 + 1e-6)
    # The last layer is linear in W: the Taylor expansion is exact there.
    last = taylor_check(net, "4.weight", x, [2], "pot")[0]
    assert last.rel_error < 1e-5
    with pytest.raises(ValueError, match="param_name"):
        taylor_check(net, "nope", x, [4])


def test_model_part_rejects_bad_arguments() -> None:
    from qlib.distortion import model_part

    with pytest.raises(ValueError, match="n_inputs"):
        model_part("minilm", n_inputs=17)
    with pytest.raises(ValueError, match="batch_size"):
        model_part("minilm", batch_size=0)
    with pytest.raises(ValueError, match="name"):
        model_part("")


def test_model_part_names_only_minilm_and_points_to_vision_encoder_part() -> None:
    from qlib.distortion import model_part

    with pytest.raises(ValueError, match="vision_encoder_part"):
        model_part("tiny-git")


def test_vision_encoder_part_of_the_tiny_git_goes_through_the_sweep() -> None:
    captioning = pytest.importorskip("qlib.captioning")
    from qlib.captioning.data import load_image
    from qlib.captioning.model import CHECKPOINTS
    from qlib.distortion import vision_encoder_part

    if not CHECKPOINTS["tiny-git"].is_dir():  # pragma: no cover - the evaluation chapter ships it
        pytest.skip("no tiny-git checkpoint")
    cap = captioning.load_captioner("tiny-git")
    pv = cap.processor.images([load_image(s.path) for s in captioning.shapes_dataset("image", "test", n=3)])
    part = vision_encoder_part(cap, pv, label="tiny-git vision encoder", batch_size=2)
    assert part.label == "tiny-git vision encoder" and [b.shape[0] for b in part.batches] == [2, 1]
    assert part.module is cap.agent
    pts = distortion_sweep(part.module, part.batches, [2, 8], schemes=["uniform"], output_fn=part.output_fn)
    assert all(p.bound is None for p in pts)  # a ViT is not of the form of eq. (10)
    assert pts[0].output_distortion > pts[1].output_distortion > 0
    with pytest.raises(ValueError, match="pixel_values"):
        vision_encoder_part(cap, pv[0])
    with pytest.raises(ValueError, match="agent"):
        vision_encoder_part(object(), pv)


def test_distortion_does_not_import_a_model_family() -> None:
    """Layering (issue 15 item 7): a bound never imports qlib.captioning."""
    import subprocess
    import sys

    code = ("import sys, qlib.distortion; "
            "bad = sorted(m for m in sys.modules if m.startswith('qlib.captioning') or m == 'qlib.ppo_env'); "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"qlib.distortion imported {out.stdout.strip()}"


def test_output_agreement_relative_error_cosine_and_intervals() -> None:
    from qlib.distortion import output_agreement, sweep_summary

    net = _chain()
    X = torch.randn(40, 6, generator=torch.Generator().manual_seed(3))
    loader = [X[:20], X[20:]]
    same = output_agreement(net, net, loader)
    assert np.all(same.distance == 0) and same.relative_error() == 0
    assert np.allclose(same.cosine[same.reference > 0], 1.0)
    qnet, _ = quantize_module(net, 2, "uniform")
    ag = output_agreement(net, qnet, loader)
    with torch.no_grad():
        ya, yb = net(X).double(), qnet(X).double()
    assert ag.relative_error() == pytest.approx(float((ya - yb).abs().sum(1).mean() / ya.abs().sum(1).mean()))
    assert ag.cosine == pytest.approx(torch.nn.functional.cosine_similarity(ya, yb, dim=1).numpy())
    lo, hi = ag.interval("relative_error")
    assert lo <= ag.relative_error() <= hi and lo < hi
    assert ag.interval("relative_error") == (lo, hi)  # seeded
    clo, chi = ag.interval("cosine")
    assert clo <= float(ag.cosine.mean()) <= chi
    with pytest.raises(ValueError, match="what"):
        ag.interval("mse")  # type: ignore[arg-type]
    pts = distortion_sweep(net, loader, [2, 4, 8], schemes=["uniform"], task_fn=lambda m: 1.5)
    s = sweep_summary(pts, "uniform")
    assert np.all(s["task"] == 1.5)
    assert s["rel_error"][0] == pytest.approx(pts[0].relative_error) and s["rel_error"][0] > s["rel_error"][-1]
    assert s["cosine"][-1] > s["cosine"][0]
    pc = distortion_sweep(net, loader, [4], schemes=["uniform"], per_channel=True)
    assert pc[0].per_channel and pc[0].output_distortion != s["output"][1]


def test_working_from() -> None:
    from qlib.distortion import working_from

    assert working_from([2, 3, 4, 5], [2.0, 0.05, 0.2, 0.01]) == 5
    assert working_from([2, 3, 4], [0.05, 0.04, 0.01]) == 2
    assert working_from([2, 3], [1.0, 0.5], max_rel_error=0.1) is None
    with pytest.raises(ValueError, match="max_rel_error"):
        working_from([2], [0.1], max_rel_error=0)
    with pytest.raises(ValueError, match="increasing"):
        working_from([3, 2], [0.1, 0.1])
