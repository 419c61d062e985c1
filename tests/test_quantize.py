"""Unit tests of qlib.quantize: levels, signs, idempotence, monotone distortion, input checks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from qlib.quantize import SCHEMES, num_levels, quantize, quantize_module


def _samples(n: int = 4000, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    expo = -torch.log(torch.rand(n, generator=g)) * 0.02  # exponential magnitudes (eq. 3)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    return {
        "gauss": torch.randn(n, generator=g),
        "laplace": sign * expo,
        "uniform": torch.rand(n, generator=g) * 2 - 1,
        "matrix": torch.randn(40, 100, generator=g) * 0.1,
    }


def _l1(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().sum())


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bit_width", range(1, 17))
def test_at_most_2_pow_b_minus_1_magnitudes(scheme: str, bit_width: int) -> None:
    for w in _samples().values():
        q = quantize(w, bit_width, scheme)
        mags = torch.unique(q.abs())
        assert mags.numel() <= num_levels(bit_width)
        if bit_width == 1:
            assert mags.numel() == 1  # sign only: one magnitude (no exact zeros in the samples)


def test_uniform_levels_are_a_fixed_step_up_to_the_max() -> None:
    w = _samples()["gauss"]
    M = float(w.abs().max())
    for b in range(2, 9):
        n = 2 ** (b - 1) - 1
        q = quantize(w, b, "uniform").double()
        k = q.abs() * n / M
        assert torch.allclose(k, k.round(), atol=1e-4)  # every magnitude is k * Δ
        assert float(q.abs().max()) == pytest.approx(M, rel=0, abs=0)  # top level is M exactly
        assert float((w.double() - q).abs().max()) <= M / n / 2 * (1 + 1e-6)  # nearest level
    # bit_width = 8 is the symmetric int8 grid -127…127
    assert torch.unique((quantize(w, 8).double() * 127 / M).round()).numel() <= 255


def test_pot_levels_are_powers_of_two_nearest_in_arithmetic_sense() -> None:
    w = _samples()["laplace"]
    M = float(w.abs().max())
    n1 = int(np.floor(np.log2(4 * M / 3)))
    for b in range(2, 7):
        levels = np.array([0.0] + [2.0 ** (n1 - j) for j in range(2 ** (b - 1) - 1)])
        q = quantize(w, b, "pot").double().numpy()
        assert set(np.unique(np.abs(q))) <= set(levels)
        # brute-force nearest level (ties do not occur for these random samples)
        a = np.abs(w.double().numpy())
        nearest = levels[np.argmin(np.abs(a[:, None] - levels[None, :]), axis=1)]
        np.testing.assert_array_equal(np.abs(q), nearest)


def test_bit_width_one_is_sign_only_and_zero_stays_zero() -> None:
    w = torch.tensor([0.7, -0.2, 0.0, 0.01, -0.0, -1.1])
    u = quantize(w, 1, "uniform")
    assert u.tolist() == pytest.approx([1.1, -1.1, 0.0, 1.1, 0.0, -1.1])
    p = quantize(w, 1, "pot")
    assert p.tolist() == [1.0, -1.0, 0.0, 1.0, 0.0, -1.0]  # 2**floor(log2(4*1.1/3)) = 1
    for b, s in itertools.product(range(1, 17), SCHEMES):
        assert float(quantize(w, b, s)[2]) == 0.0


@pytest.mark.parametrize("scheme", SCHEMES)
def test_sign_preserved(scheme: str) -> None:
    for w in _samples(seed=1).values():
        for b in range(1, 17):
            q = quantize(w, b, scheme)
            nz = q != 0
            assert torch.equal(torch.sign(q[nz]), torch.sign(w[nz]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_idempotent(scheme: str, per_channel: bool, dtype: torch.dtype) -> None:
    for seed in range(5):
        for w in _samples(seed=seed).values():
            w = w.to(dtype)
            for b in range(1, 17):
                q = quantize(w, b, scheme, per_channel)
                assert torch.equal(quantize(q, b, scheme, per_channel), q), (seed, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_half_precision_dtype_shape_and_idempotence(scheme: str, dtype: torch.dtype) -> None:
    w = _samples()["matrix"].to(dtype)
    for b in range(1, 7):
        q = quantize(w, b, scheme)
        assert q.dtype == dtype and q.shape == w.shape
        assert torch.equal(quantize(q, b, scheme), q)
        assert torch.unique(q.abs()).numel() <= num_levels(b)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_distortion_non_increasing_in_bit_width(scheme: str) -> None:
    for seed in range(3):
        for name, w in _samples(seed=seed).items():
            for per_channel in (False, True):
                d = [_l1(w, quantize(w, b, scheme, per_channel)) for b in range(1, 17)]
                assert all(x >= y for x, y in zip(d, d[1:])), (name, seed, d)
                if scheme == "uniform":
                    assert d[-1] < 1e-3 * d[0]
                else:  # PoT levels are a factor 2 apart: the error saturates, never vanishes
                    assert d[-1] == pytest.approx(d[-2], rel=1e-6) and d[-1] > 0.05 * _l1(w, 0 * w)


def test_distortion_non_increasing_elementwise_where_levels_nest() -> None:
    w = _samples()["laplace"]
    pot = [(w - quantize(w, b, "pot")).abs() for b in range(1, 17)]
    assert all(bool((x >= y).all()) for x, y in zip(pot, pot[1:]))
    uni = [(w - quantize(w, b, "uniform")).abs() for b in (1, 2, 3)]
    assert all(bool((x >= y).all()) for x, y in zip(uni, uni[1:]))


def test_a_quantizer_with_too_many_levels_would_be_caught() -> None:
    # the level-count check above can fail: uniform rounding with 2**b levels has too many
    w = _samples()["gauss"]
    M = float(w.abs().max())
    n = 2 ** 3  # one level too many for bit_width=4
    too_fine = (w * n / M).round() * M / n
    assert torch.unique(too_fine.abs()).numel() > num_levels(4)


def test_per_channel_uses_each_rows_maximum() -> None:
    w = _samples()["matrix"]
    w[3] *= 10.0  # one loud channel
    q = quantize(w, 4, "uniform", per_channel=True)
    assert torch.equal(q.abs().amax(dim=1), w.abs().amax(dim=1))
    # per-tensor quantization crushes the quiet rows, per-channel does not
    assert _l1(w, q) < _l1(w, quantize(w, 4, "uniform"))
    v = torch.randn(10)
    assert torch.equal(quantize(v, 4, per_channel=True), quantize(v, 4))  # 1-D: per tensor


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_per_channel_rows_equal_per_tensor_quantization_of_each_row(scheme: str, dtype: torch.dtype) -> None:
    # per tensor and per channel run different code (PoT: an in-place fast path vs masks)
    w = _samples(seed=4)["matrix"].to(dtype)
    w[0, :5] = torch.tensor([0.0, -0.0, 1e-30, -1e-12, 3e-5], dtype=dtype)  # zeros, tiny values
    w[1] *= 1e-3
    for b in range(1, 17):
        q = quantize(w, b, scheme, per_channel=True)
        for i in range(w.shape[0]):
            assert torch.equal(q[i], quantize(w[i], b, scheme)), (b, i)


def test_new_tensor_original_untouched_and_all_zero_input() -> None:
    w = torch.randn(3, 4)
    before = w.clone()
    for s in SCHEMES:
        q = quantize(w, 3, s)
        assert q.data_ptr() != w.data_ptr()
        assert torch.equal(w, before)
        z = torch.zeros(2, 5)
        assert torch.equal(quantize(z, 3, s, per_channel=True), z)
        assert torch.equal(quantize(z, 1, s), z)
    assert quantize(torch.empty(0), 3).numel() == 0


@pytest.mark.parametrize("bad", [0, 17, -3, 2.5, True, "4", None])
def test_rejects_bit_width_outside_1_to_16(bad: object) -> None:
    with pytest.raises(ValueError, match="bit_width"):
        quantize(torch.ones(3), bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bit_width"):
        quantize_module(torch.nn.Linear(2, 2), bad)  # type: ignore[arg-type]


def test_accepts_numpy_integer_bit_width() -> None:
    assert torch.equal(quantize(torch.ones(3), np.int64(4)), torch.ones(3))


def test_rejects_bad_scheme_dtype_and_non_finite() -> None:
    with pytest.raises(ValueError, match="scheme"):
        quantize(torch.ones(3), 4, "log")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="floating"):
        quantize(torch.ones(3, dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="finite"):
        quantize(torch.tensor([1.0, float("nan")]), 4)
    with pytest.raises(ValueError, match="finite"):
        quantize(torch.tensor([1.0, float("inf")]), 4, "pot")
    with pytest.raises(ValueError, match="torch.Tensor"):
        quantize(np.ones(3), 4)  # type: ignore[arg-type]


def test_quantize_module_copy_and_layer_distortion() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    qnet, dist = quantize_module(net, 3, "pot")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])  # original untouched
    assert list(dist) == ["0.weight", "2.weight"]
    for name, d in dist.items():
        w = dict(net.named_parameters())[name]
        qw = dict(qnet.named_parameters())[name]
        assert torch.equal(qw, quantize(w, 3, "pot"))
        assert d == pytest.approx(_l1(w, qw))
        assert d > 0
    assert torch.equal(qnet[0].bias, net[0].bias)  # biases kept with include="weights"
    _, dist_all = quantize_module(net, 3, "uniform", include="all")
    assert list(dist_all) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(ValueError, match="include"):
        quantize_module(net, 3, include="biases")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="module"):
        quantize_module(torch.ones(3), 3)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("scheme", SCHEMES)
def test_cuda_matches_cpu(scheme: str) -> None:  # pragma: no cover - no GPU in CI
    # Not bit for bit: the GPU compiler may fuse multiply-adds, so a value on a rounding boundary
    # can land one level over. Levels agree except at such ties; values within one step otherwise.
    w = _samples()["matrix"]
    for b in (1, 2, 4, 8):
        gpu, cpu = quantize(w.cuda(), b, scheme).cpu(), quantize(w, b, scheme)
        assert torch.equal(torch.sign(gpu), torch.sign(cpu)) or b == 1
        assert (gpu != cpu).float().mean() < 1e-3
        torch.testing.assert_close(gpu, cpu, rtol=1e-6, atol=float(w.abs().max()) * 2.0 ** (1 - b))


# ---------------------------------------------------------------------------------------------
# Issue 14.1: finite output wherever the input is finite, in the input's dtype, for every scheme,
# bit width and per-channel setting, proved property-based (hypothesis) over subnormals, huge
# values and the half-precision formats, beside the properties above.
# ---------------------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
           "float64": torch.float64}


@st.composite
def _tensors(draw: st.DrawFn) -> torch.Tensor:
    name = draw(st.sampled_from(list(_DTYPES)))
    dtype = _DTYPES[name]
    big = float(torch.finfo(dtype).max)
    width = 64 if dtype == torch.float64 else 32
    # Elements anywhere in the dtype's finite range, subnormals included, plus a per-draw
    # exponent shift so that whole tensors sit near the top or the bottom of the range.
    shape = draw(st.sampled_from([(7,), (1,), (3, 5), (4, 1), (2, 3, 2)]))
    # every format's maximum is exactly a float32 (bfloat16 and float16 are subsets of it)
    elems = st.floats(-big, big, allow_nan=False, allow_infinity=False, allow_subnormal=True, width=width)
    arr = draw(hnp.arrays(np.float64 if width == 64 else np.float32, shape, elements=elems))
    t = torch.from_numpy(np.array(arr)).to(dtype)  # float32 -> half may round, never to inf (bounded)
    scale = draw(st.sampled_from([1.0, 2.0**-120, 2.0**-140, 2.0**100, 2.0**-20, 2.0**10]))
    if scale != 1.0:
        scaled = (t.double() * scale).to(dtype)
        if bool(torch.isfinite(scaled).all()):
            t = scaled
    assert bool(torch.isfinite(t).all())  # the bounds above keep every element finite
    return t


_EDGE = [
    torch.tensor([1e-40, -5e-41]),                              # float32 subnormals
    torch.tensor([1e-36, 3e-37, -1e-38]),                       # largest magnitude 1e-36
    torch.tensor([[1e-40, -5e-41], [1.0, 2.0]]),                # a per-channel row of subnormals
    torch.tensor([3.0e38, -1.0, 2.6e38]),                       # PoT: 4 M / 3 overflows float32
    torch.tensor([60000.0, -49200.0, 1.0], dtype=torch.float16),  # PoT level 2**16 = inf in float16
    torch.tensor([3.3e38, 1e-38], dtype=torch.bfloat16),
    torch.tensor([1.7e308, -1e-310, 5e-324], dtype=torch.float64),
]


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("case", range(len(_EDGE)))
def test_issue_14_1_edge_cases_are_finite_in_the_input_dtype(case: int, scheme: str, per_channel: bool) -> None:
    x = _EDGE[case]
    for b in range(1, 17):
        q = quantize(x, b, scheme, per_channel)
        assert q.dtype == x.dtype and q.shape == x.shape
        assert bool(torch.isfinite(q).all()), (b, q)
        nz = q != 0
        assert torch.equal(torch.sign(q[nz]), torch.sign(x[nz]))


def test_issue_14_1_largest_element_keeps_a_nonzero_level() -> None:
    # Before: PoT sent the largest float32 element >= 2.6e38 to 0.0 and float16 >= 49 200 to inf.
    q = quantize(torch.tensor([3.0e38, 1.0]), 4, "pot")
    assert float(q[0]) == 2.0**127  # INQ's 2**128 is not a float32: the top level is capped
    h = quantize(torch.tensor([60000.0, 1.0], dtype=torch.float16), 4, "pot")
    assert float(h[0]) == 2.0**15
    u = quantize(torch.tensor([1e-40, -5e-41]), 4)  # uniform on subnormals: the grid, not inf
    assert float(u[0]) == float(torch.tensor(1e-40)) and float(u[1]) < 0


def _levels_resolvable(x: torch.Tensor, b: int, per_channel: bool) -> bool:
    """Whether the dtype can hold the uniform grid (step M/n at least 256 times its smallest
    normal number, and, for half precision, n small enough that rounding to the format keeps
    each level nearest its own k: n 2**-p < 1/2). Outside, idempotence cannot hold in any code."""
    fi = torch.finfo(x.dtype)
    n = 2 ** (b - 1) - 1
    p = {torch.float16: 11, torch.bfloat16: 8}.get(x.dtype)
    if p is not None and n * 2.0 ** -p >= 0.25:
        return False
    M = x.double().abs().reshape(x.shape[0], -1).amax(1) if per_channel and x.ndim >= 2 else x.double().abs().max()
    Mpos = M[M > 0] if M.ndim else M[None][M[None] > 0]
    if Mpos.numel() == 0:
        return True
    return float(Mpos.min()) / max(n, 1) >= 2.0**8 * fi.tiny


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=_tensors(), scheme=st.sampled_from(SCHEMES), per_channel=st.booleans())
def test_property_finite_dtype_sign_levels_idempotent(x: torch.Tensor, scheme: str, per_channel: bool) -> None:
    prev_err = None
    for b in range(1, 17):
        q = quantize(x, b, scheme, per_channel)
        assert q.dtype == x.dtype and q.shape == x.shape
        assert bool(torch.isfinite(q).all()), (b, x, q)
        nz = q != 0
        assert torch.equal(torch.sign(q[nz]), torch.sign(x[nz]))  # the sign bit is kept
        two_d = per_channel and q.ndim >= 2
        rows = zip(q.reshape(q.shape[0], -1) if two_d else q.reshape(1, -1),
                   x.reshape(x.shape[0], -1) if two_d else x.reshape(1, -1))
        for r, xr in rows:
            # an exact zero input has no sign to keep and stays 0 (also at b = 1, sign only)
            assert torch.unique(r[xr != 0].abs()).numel() <= num_levels(b)
        if scheme == "pot" or _levels_resolvable(x, b, per_channel):
            assert torch.equal(quantize(q, b, scheme, per_channel), q), (b, x, q)
        err = (x.double() - q.double()).abs()
        if scheme == "pot":
            # nested level sets: the error is non-increasing element by element, up to the dtype's
            # smallest subnormal: a finer level below it rounds to 0 when stored in the dtype (seen:
            # 7.2e-43 -> 1.4e-45 at 6 bits but -> 0 at 7 bits in float32), one step of that resolution.
            if prev_err is not None:
                finfo = torch.finfo(x.dtype)
                assert bool((err <= prev_err + finfo.tiny * finfo.eps * (1 + 1e-6)).all()), (b, x)
            prev_err = err
        elif b >= 2 and x.dtype in (torch.float32, torch.float64) and _levels_resolvable(x, b, per_channel):
            # uniform grids are not nested beyond 3 bits (a point of the 3-bit grid can miss the
            # 4-bit one), so the property is the bound that shrinks with b: |x - q| <= Δ_b / 2.
            M = (x.double().abs().reshape(x.shape[0], -1).amax(1, keepdim=True)
                 if per_channel and x.ndim >= 2 else x.double().abs().max())
            step = M / (2 ** (b - 1) - 1)
            bound = (step / 2 * (1 + 1e-6) + torch.finfo(x.dtype).tiny).expand_as(err.reshape(err.shape[0], -1)) \
                if per_channel and x.ndim >= 2 else step / 2 * (1 + 1e-6) + torch.finfo(x.dtype).tiny
            e2 = err.reshape(err.shape[0], -1) if per_channel and x.ndim >= 2 else err
            assert bool((e2 <= bound).all()), (b, x)


@settings(max_examples=100, deadline=None)
@given(x=_tensors(), b=st.integers(1, 16), per_channel=st.booleans())
def test_property_pot_wide_path_equals_the_fast_path_where_both_apply(x: torch.Tensor, b: int,
                                                                      per_channel: bool) -> None:
    # Two implementations of the same INQ rule (bit masks vs frexp exponents) must agree bit for bit.
    from qlib import quantize as qm

    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    M = qm._max_magnitude(work, per_channel)
    if not qm._fast_path_ok(M, work.dtype, x.dtype, "pot", b):
        return
    fast = qm._pot(work.clone(), M, b)
    wide = qm._pot_wide(work.clone(), M, b, qm._emax(x.dtype))
    assert torch.equal(fast, wide) and torch.equal(torch.signbit(fast), torch.signbit(wide))


def test_pot_error_at_the_bottom_of_the_subnormals_grows_by_at_most_one_step() -> None:
    # The case hypothesis found: a finer PoT level below float32's smallest subnormal is stored as 0.
    x = torch.tensor([[1.1285e-36, 7.1746e-43, 0.0]])
    finfo = torch.finfo(torch.float32)
    errs = [(x.double() - quantize(x, b, "pot", True).double()).abs() for b in (6, 7)]
    assert bool((errs[1] <= errs[0] + finfo.tiny * finfo.eps * (1 + 1e-6)).all())
    assert bool(torch.isfinite(quantize(x, 7, "pot", True)).all())
