"""Unit tests of qlib.weights: streamed MLEs equal scipy.stats' fits, KS and AIC pick the true
family, layer types, checkpoint loading (real MiniLM weights, offline hub error), bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats as st

from qlib import weights
from qlib.weights import MagnitudeStats, fit_magnitudes, fit_stats, layer_type


def _stats(x: np.ndarray, split: int = 3) -> MagnitudeStats:
    acc = MagnitudeStats()
    for part in np.array_split(x, split):  # several tensors: merge must equal one pass
        acc.merge(MagnitudeStats().add(torch.from_numpy(part)))
    return acc


@pytest.fixture
def rng():  # function scope: each test draws the same numbers whatever ran before
    return np.random.default_rng(0)


def test_mles_equal_scipy_fits(rng):
    x = rng.gamma(1.3, 0.02, size=20_000)
    w = x * rng.choice([-1.0, 1.0], size=x.size)  # signed weights: magnitudes are what is fitted
    fit = fit_stats(_stats(w))
    assert fit.lam == pytest.approx(1 / st.expon.fit(x, floc=0)[1], rel=1e-10)
    assert fit.sigma == pytest.approx(st.halfnorm.fit(x, floc=0)[1], rel=1e-6)
    k, _, scale = st.gamma.fit(x, floc=0)
    assert fit.gamma_shape == pytest.approx(k, rel=1e-4)
    assert fit.gamma_scale == pytest.approx(scale, rel=1e-4)
    # AIC from the sufficient statistics equals scipy's log-likelihood
    ll = st.gamma.logpdf(x, fit.gamma_shape, scale=fit.gamma_scale).sum()
    assert fit.aic["gamma"] == pytest.approx(4 - 2 * ll, rel=1e-9)
    assert fit.aic["expon"] == pytest.approx(2 - 2 * st.expon.logpdf(x, scale=1 / fit.lam).sum(), rel=1e-9)
    assert fit.aic["halfnorm"] == pytest.approx(2 - 2 * st.halfnorm.logpdf(x, scale=fit.sigma).sum(), rel=1e-9)


def test_ks_distance_matches_scipy_kstest(rng):
    x = rng.exponential(0.05, size=50_000)
    fit = fit_stats(_stats(x))
    exact = st.kstest(x, st.expon(scale=1 / fit.lam).cdf).statistic
    assert fit.ks["expon"] == pytest.approx(exact, abs=3e-3)
    exact_hn = st.kstest(x, st.halfnorm(scale=fit.sigma).cdf).statistic
    assert fit.ks["halfnorm"] == pytest.approx(exact_hn, abs=3e-3)


@pytest.mark.parametrize("family", ["expon", "halfnorm", "gamma"])
def test_aic_picks_the_generating_family(rng, family):
    n = 100_000
    x = {"expon": rng.exponential(0.02, n), "halfnorm": np.abs(rng.normal(0, 0.02, n)),
         "gamma": rng.gamma(2.5, 0.01, n)}[family]
    fit = fit_stats(_stats(x))
    if family == "expon":  # nested in gamma: gamma may win by < 2 AIC units, never by much
        assert fit.aic["expon"] <= min(fit.aic.values()) + 2
        assert fit.gamma_shape == pytest.approx(1.0, abs=0.02)
    else:
        assert fit.best == family
    assert fit.ks[fit.best] < 0.01


def test_laplace_weights_recover_lambda():
    torch.manual_seed(1)
    w = torch.distributions.Laplace(0.0, 0.25).sample((300, 1000))
    rep = fit_magnitudes({"layer.weight": w}, progress=False)
    assert rep.overall.lam == pytest.approx(4.0, rel=0.01)
    assert rep.overall.ks["expon"] < 0.01


def test_zeros_are_counted_and_excluded():
    w = torch.tensor([0.0, 0.0, 0.1, 0.2, 0.3, -0.4])
    acc = MagnitudeStats().add(w)
    assert (acc.n, acc.n_zero, acc.n_pos) == (6, 2, 4)
    assert fit_stats(acc).lam == pytest.approx(4 / 1.0)


def test_histogram_and_density_integrate_to_one(rng):
    x = rng.exponential(0.03, 40_000)
    acc = _stats(x)
    assert acc.counts.sum() == x.size
    edges = np.linspace(0, x.max() * 1.01, 200)
    assert np.sum(acc.density(edges) * np.diff(edges)) == pytest.approx(1.0, abs=1e-9)
    assert acc.ecdf(np.median(x)) == pytest.approx(0.5, abs=0.005)


def test_bf16_and_fp16_tensors_are_accepted():
    w = torch.linspace(-1, 1, 1001)
    a32 = MagnitudeStats().add(w)
    a16 = MagnitudeStats().add(w.to(torch.bfloat16))
    assert a16.n == a32.n and a16.s1 == pytest.approx(a32.s1, rel=1e-2)
    assert MagnitudeStats().add(w.half()).n == 1001


@pytest.mark.parametrize("name, shape, expected", [
    ("encoder.layer.0.attention.self.query.weight", (384, 384), "attention"),
    ("encoder.layer.0.attention.output.dense.weight", (384, 384), "attention"),
    ("encoder.layer.0.intermediate.dense.weight", (1536, 384), "dense"),
    ("encoder.layer.0.output.dense.weight", (384, 1536), "dense"),
    ("encoder.layer.0.output.LayerNorm.weight", (384,), "norm"),
    ("h.0.ln_1.weight", (768,), "norm"),
    ("h.0.attn.c_attn.weight", (768, 2304), "attention"),
    ("h.0.mlp.c_fc.weight", (768, 3072), "dense"),
    ("h.0.mlp.c_proj.weight", (3072, 768), "dense"),
    ("h.0.attn.c_proj.weight", (768, 768), "attention"),
    ("query_tokens", (1, 32, 768), "other"),
    ("conv1d.weight", (64, 3, 5), "conv"),
    ("wte.weight", (50257, 768), "embedding"),
    ("embeddings.word_embeddings.weight", (30522, 384), "embedding"),
    ("resnet.encoder.stages.0.layers.0.layer.0.convolution.weight", (64, 64, 1, 1), "conv"),
    ("layer1.0.bn1.weight", (64,), "norm"),
    ("fc1.bias", (128,), "bias"),
    ("net.0.weight", (128, 64), "dense"),
    ("temporal_tokens", (768,), "other"),
])
def test_layer_type(name, shape, expected):
    assert layer_type(name, shape) == expected


def test_module_source_and_matrices_only():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    rep = fit_magnitudes(model, progress=False)
    assert rep.name == "Sequential"
    assert rep.overall.n == sum(p.numel() for p in model.parameters())
    assert set(rep.by_type) == {"bias", "dense"}
    only = fit_magnitudes(model, include="matrices", progress=False)
    assert only.overall.n == 64 * 128 + 128 * 10


def test_safetensors_file_is_streamed(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_file({"a.weight": torch.randn(50, 40), "b.bias": torch.randn(40), "pos_ids": torch.arange(5)}, str(path))
    rep = fit_magnitudes(str(path), name="tiny", progress=False)
    assert rep.overall.n == 50 * 40 + 40  # the integer tensor is skipped
    assert rep.rows()[0]["group"] == "all" and rep.rows()[0]["model"] == "tiny"


def test_real_minilm_checkpoint_offline():
    files = weights.resolve_checkpoint("all-MiniLM-L6-v2")
    assert files and files[0].suffix == ".safetensors"
    rep = fit_magnitudes("all-MiniLM-L6-v2", progress=False)
    assert rep.overall.n == 22_713_216  # all float parameters of all-MiniLM-L6-v2
    assert set(rep.by_type) == {"attention", "dense", "embedding", "norm", "bias"}
    assert 5 < rep.overall.lam < 100  # weights of order 0.01-0.1
    assert rep.by_type["norm"].ks["expon"] > 0.3  # LayerNorm scales sit near 1: not exponential


def test_offline_hub_id_fails_with_one_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"cannot fetch hub model 'microsoft/resnet-152'.*instead\.$"):
        weights.resolve_checkpoint("microsoft/resnet-152")


@pytest.mark.parametrize("call, name", [
    (lambda: fit_magnitudes({"w": torch.ones(3)}, include="some", progress=False), "include"),
    (lambda: fit_magnitudes({"ids": torch.arange(4)}, progress=False), "source"),
    (lambda: fit_magnitudes(3.0, progress=False), "source"),
    (lambda: fit_stats(MagnitudeStats().add(torch.zeros(5))), "stats"),
    (lambda: MagnitudeStats().add(torch.tensor([1.0, float("nan")])), "NaN"),
    (lambda: MagnitudeStats().add(torch.arange(3)), "floating"),
    (lambda: weights.resolve_checkpoint(""), "checkpoint"),
    (lambda: weights.resolve_checkpoint("not_there/model.safetensors"), "does not exist"),
])
def test_bad_input(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_book_checkpoint_by_bare_name(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setattr(weights, "DATA_DIR", tmp_path)
    save_file({"0.weight": torch.randn(8, 8)}, str(tmp_path / "toy_net.safetensors"))
    assert weights.resolve_checkpoint("toy_net") == [tmp_path / "toy_net.safetensors"]
    (tmp_path / "captioner").mkdir()
    save_file({"w": torch.randn(3, 3)}, str(tmp_path / "captioner" / "model.safetensors"))
    assert fit_magnitudes("captioner", progress=False).overall.n == 9


def test_entropy_estimate_and_gap(rng):
    x = rng.exponential(0.05, 200_000)
    fit = fit_stats(_stats(x))
    assert fit.entropy_bits == pytest.approx(np.log2(np.e * 0.05), abs=0.01)
    assert abs(fit.entropy_gap_bits) < 0.01
    g = fit_stats(_stats(rng.gamma(3.0, 0.01, 200_000)))
    exact = st.gamma(3.0, scale=0.01).entropy() / np.log(2)
    assert g.entropy_bits == pytest.approx(exact, abs=0.01)
    assert g.entropy_gap_bits > 0.2  # max-entropy: any other shape has less entropy at equal mean


def test_expected_exp_matches_exponential_laplace_transform(rng):
    x = rng.exponential(0.05, 200_000)
    acc = _stats(x)
    lam = 1 / x.mean()
    D = np.array([0.001, 0.01, 0.1])
    # The histogram must reproduce the sample mean it summarizes (bin width 0.58 %) ...
    np.testing.assert_allclose(acc.expected_exp(D), np.exp(-x[None, :] / D[:, None]).mean(axis=1), rtol=2e-3)
    # ... which for exponential samples is close to the Laplace transform; at D = 0.001 only ~2 %
    # of the samples contribute, so sampling noise there is ~1.6 % (hence 5 %).
    np.testing.assert_allclose(acc.expected_exp(D), lam * D / (lam * D + 1), rtol=0.05)
    assert isinstance(acc.expected_exp(0.01), float)
    with pytest.raises(ValueError, match="D must"):
        acc.expected_exp(0.0)
