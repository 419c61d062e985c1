"""qlib.captioning.mixed: per-layer allocation on the split captioner and the CLI flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from qlib.captioning import load_captioner
from qlib.captioning import mixed as cm
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def cap():
    import torch

    torch.set_num_threads(1)
    return load_captioner("tiny-git")


def test_agent_layers_and_flops(cap):
    layers = cm.agent_layers(cap)
    flops = cm.agent_flops(cap)
    assert list(layers) == list(flops) and len(layers) >= 3
    assert all(n.endswith("weight") for n in layers)
    # A Linear weight applied to every token costs 2 n_l tokens FLOPs per image.
    name = next(n for n in layers if n.endswith("fc1.weight"))
    n_tokens = flops[name] // (2 * layers[name])
    assert flops[name] == 2 * layers[name] * n_tokens and n_tokens >= 2


def test_per_layer_allocation_respects_the_average_and_uses_training_data(cap, monkeypatch):
    import qlib.captioning.mixed as mod

    splits = []
    real = mod.shapes_dataset

    def spy(kind="image", split="test", n=None, **kw):
        splits.append(split)
        return real(kind, split, n=n, **kw)

    monkeypatch.setattr(mod, "shapes_dataset", spy)
    names, sizes, table = cm.sensitivity_table(cap, "measured", "uniform", False, n_train=8, bit_widths=(1, 2, 3, 4))
    assert splits and set(splits) == {"train"}  # never the test split
    assert table.shape == (len(names), 4) and np.all(table[:, 0] >= table[:, 3])
    bits = cm.allocate_agent(cap, 2, "per-layer", table=table, bit_widths=(1, 2, 3, 4))
    avg = np.dot([bits[n] for n in names], sizes) / sizes.sum()
    assert avg <= 2 + 1e-12 and set(bits.values()) <= {1, 2, 3, 4}
    assert cm.allocate_agent(cap, 3, "uniform") == dict.fromkeys(names, 3)
    with pytest.raises(ValueError, match="allocation"):
        cm.allocate_agent(cap, 3, "mixed")
    with pytest.raises(ValueError, match="integer"):
        cm.allocate_agent(cap, 2.5, "uniform")


def test_model_and_hawq_tables(cap):
    names, sizes, model = cm.sensitivity_table(cap, "model", bit_widths=(1, 2, 3))
    assert model.shape == (len(names), 3) and np.all(np.diff(model, axis=1) < 0)
    _, _, hawq = cm.sensitivity_table(cap, "hawq", n_train=8, bit_widths=(2, 3), n_probes=2)
    assert hawq.shape == (len(names), 2) and np.all(np.isfinite(hawq))


def test_full_precision_captions_equal_the_split_pipeline(cap):
    from qlib.captioning import shapes_dataset
    from qlib.captioning.data import load_image

    images = [load_image(s.path) for s in shapes_dataset("image", "test", n=6)]
    assert cm.caption_with_bits(cap, images, None) == cap.caption(images)
    uniform = dict.fromkeys(cm.agent_layers(cap), 4)
    assert cm.caption_with_bits(cap, images, uniform, "pot") == cap.caption(images, bit_width=4, scheme="pot")


def test_bootstrap_helpers():
    m, lo, hi = cm.bootstrap_mean([0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    assert lo <= m <= hi and m == pytest.approx(4 / 6)
    d, lo, hi = cm.paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert d == lo == hi == 0.0
    with pytest.raises(ValueError):
        cm.paired_difference([1.0], [1.0, 2.0])


def test_cli_per_layer_json(tmp_path):
    env = {**os.environ, "QBOOK_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "qlib.captioning", "evaluate", "--bit-width", "2", "--allocation",
                          "per-layer", "--per-channel", "--n-samples", "12", "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["allocation"] == "per-layer" and res["per_channel"] is True
    assert res["average_bits"] <= 2 and set(res["bits_per_layer"]) and res["n_samples"] == 12
    lo, hi = res["CIDEr_ci95"]
    assert lo <= res["CIDEr"] <= hi
    bad = subprocess.run([sys.executable, "-m", "qlib.captioning", "evaluate", "--allocation", "greedy"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "allocation" in bad.stderr


def test_compare_allocations_rows_and_paired_intervals(cap):
    from qlib.captioning import shapes_dataset

    names = list(cm.agent_layers(cap))
    allocs = {("uniform", False, "uniform", 4): dict.fromkeys(names, 4),
              ("uniform", False, "same", 4): dict.fromkeys(names, 4),
              ("uniform", False, "low", 4): dict.fromkeys(names, 1)}
    rows = cm.compare_allocations(cap, shapes_dataset("image", "test", n=10), allocs, n_resamples=100)
    assert [r["allocation"] for r in rows] == ["full precision", "uniform", "same", "low"]
    same, low = rows[2], rows[3]
    assert same["dCIDEr"] == same["dCIDEr_lo"] == same["dCIDEr_hi"] == 0.0  # identical captions: a tie at 0
    assert low["average_bits"] == 1.0 and low["CIDEr_lo"] <= low["CIDEr"] <= low["CIDEr_hi"]
    assert rows[0]["reaches_fp"] and "scene" in rows[0]
