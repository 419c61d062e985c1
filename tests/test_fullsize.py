"""The paper's real architectures, offline (issue 18): GIT-base (and GIT-VaTeX, BLIP-2 where memory
allows) built from the shipped configs with random weights, run through the same code path as
a hub checkpoint (``python -m qlib.captioning evaluate``), split = unsplit at full precision,
and FLOPs counted on the real forward pass against ``qlib.costs.model_costs`` (meta device).

Each full-size model is built once per module into a temporary folder (GIT-base: 0.71 GB,
~15 s). Timings are never asserted.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from qlib import costs
from qlib.captioning import load_captioner
from qlib.captioning.data import generate_shapes, generate_shapes_video
from qlib.captioning.local_checkpoint import (CLIP_MEAN, CLIP_STD, SPLIT_AGENT_MODULES, build_local_checkpoint,
                                              measure_split_flops, write_wordpiece_vocab)
from qlib.captioning.sweep import load_pixels, load_samples

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _mem_available_gb() -> float:
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return float("inf")


@pytest.fixture(scope="module")
def git_base(tmp_path_factory):
    return build_local_checkpoint("git-base", tmp_path_factory.mktemp("git-base"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("images"), 2)


def _evaluate_cli(model: pathlib.Path, data: pathlib.Path, *extra: str, n: int = 2) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "qlib.captioning", "evaluate", "--model", str(model), "--data", str(data),
         "--n-samples", str(n), "--bit-width", "4", "--metrics", "CIDEr", "--json", *extra],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_the_folder_is_the_real_architecture(git_base):
    cfg = json.loads((git_base / "config.json").read_text())
    assert cfg["model_type"] == "git" and cfg["vision_config"]["image_size"] == 224
    from safetensors import safe_open

    with safe_open(str(git_base / "model.safetensors"), framework="pt") as f:
        n = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    # every parameter of the paper's GIT-base is saved (176.62 M, Sec. VI-A)
    assert n == costs.model_costs("git-base").n_params == 176_619_066


def test_processor_is_clip_at_224_px_with_the_clip_normalisation(git_base):
    cap = load_captioner(git_base)
    grey = np.full((240, 320, 3), 128, dtype=np.uint8)  # a 320x240 frame: resized and cropped to 224
    pv = cap.processor.images([grey, grey])
    assert pv.shape == (2, 3, 224, 224) and pv.dtype == torch.float32
    expected = (128 / 255 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    np.testing.assert_allclose(pv[0, :, 100, 100].numpy(), expected, atol=1e-5)
    # the word-piece tokenizer decodes ids into text and knows GIT's BOS/EOS ids
    tok = cap.processor.processor.tokenizer
    assert tok.cls_token_id == cap.server.config.bos_token_id == 101
    assert tok.sep_token_id == cap.server.config.eos_token_id == 102
    assert tok.decode(tok("a red circle")["input_ids"], skip_special_tokens=True) == "a red circle"


def test_evaluate_command_runs_full_size_git_offline(git_base, images):
    out = _evaluate_cli(git_base, images)
    assert out["n_samples"] == 2 and out["bit_width"] == 4 and out["quantizer"] == "uniform"
    assert 0.0 <= out["CIDEr"] <= 10.0
    # random weights: captions are word pieces of the local vocabulary, not English
    assert all(isinstance(ex["caption"], str) and ex["caption"] for ex in out["examples"])


def test_split_equals_unsplit_at_full_precision(git_base, images):
    from transformers import GitForCausalLM

    cap = load_captioner(git_base)
    plain = GitForCausalLM.from_pretrained(git_base).eval()
    samples, kind, _ = load_samples(images, 2)
    pv = cap.processor.images(load_pixels(samples, kind))
    with torch.inference_mode():
        emb = cap.encode(pv)
        bos = torch.full((2, 1), cap.server.config.bos_token_id)
        split_logits = cap.server(input_ids=bos, pixel_values=emb.unsqueeze(1)).logits
        plain_logits = plain(input_ids=bos, pixel_values=pv).logits
        split_ids = cap.generate_from_embedding(emb, max_new_tokens=8)
        plain_ids = plain.generate(pixel_values=pv, **{**cap.generate_kwargs, "max_new_tokens": 8})
    # same kernels on the same tensors in one process: equal up to float rounding, same tokens
    torch.testing.assert_close(split_logits, plain_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(split_ids, plain_ids)
    # and the 4-bit agent really changes the embedding the server receives
    assert not torch.allclose(cap.encode(pv, bit_width=4), emb)


def test_measured_flops_match_model_costs_within_one_percent(git_base, images):
    cap = load_captioner(git_base)
    samples, kind, _ = load_samples(images, 1)
    pv = cap.processor.images(load_pixels(samples, kind))
    measured = measure_split_flops(cap, pv)
    same_cut = costs.model_costs(git_base / "config.json", agent_modules=SPLIT_AGENT_MODULES["git"])
    assert measured["agent"] == pytest.approx(same_cut.n_flop_agent, rel=0.01)
    assert measured["server"] == pytest.approx(same_cut.n_flop_server, rel=0.01)
    # the paper's convention (vision side incl. the projection) against model_costs' default split
    default = costs.model_costs("git-base")
    assert measured["vision_side"] == pytest.approx(default.n_flop_agent, rel=0.01)
    assert measured["vision_side"] > measured["agent"]  # the projection runs on the server in the captioner
    assert measured["agent"] + measured["server"] == pytest.approx(default.n_flop_total, rel=0.01)


@pytest.mark.slow  # a second 0.7 GB model, six 224-px frames per clip: about a minute on a busy machine
def test_video_model_six_frames_through_the_command(tmp_path):
    folder = build_local_checkpoint("git-base-vatex", tmp_path / "vatex")
    ann = generate_shapes_video(tmp_path / "clips", 1, clip_frames=8)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "qlib.captioning", "evaluate", "--model", str(folder), "--data", str(ann),
         "--image-root", str(ann.parent / "test"), "--n-samples", "1", "--bit-width", "4", "--metrics", "CIDEr",
         "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["n_samples"] == 1
    # six frames go through the encoder: the measured vision side is the paper's 212.27 GFLOPs (0.1 %)
    cap = load_captioner(folder)
    samples, kind, _ = load_samples(ann, 1, image_root=ann.parent / "test")
    pv = cap.processor.images(load_pixels(samples, kind, 6))
    assert pv.shape == (1, 6, 3, 224, 224)
    measured = measure_split_flops(cap, pv)
    assert measured["vision_side"] / 1e9 == pytest.approx(costs.PAPER_COSTS["git-base-vatex"]["gflops"], rel=1e-3)
    assert measured["vision_side"] == pytest.approx(costs.model_costs("git-base-vatex").n_flop_agent, rel=0.01)


@pytest.mark.slow
def test_blip2_full_size_in_bfloat16(tmp_path):
    # Run with QBOOK_TEST_BLIP2=1 on the 2-core, 24 GB machine: passed in 2.9 min on a quiet machine
    # (18.1 GB peak RSS); ~10 min under load. Too long and too big for the default test run.
    if os.environ.get("QBOOK_TEST_BLIP2") != "1":
        pytest.skip("BLIP-2 OPT-2.7B at full size takes 3-10 min and ~18 GB of RAM on a 2-core CPU; "
                    "set QBOOK_TEST_BLIP2=1 to run it")
    if _mem_available_gb() < 20:
        pytest.skip(f"BLIP-2 OPT-2.7B in bfloat16 needs ~18 GB of free RAM, {_mem_available_gb():.1f} GB available")
    folder = build_local_checkpoint("blip2-opt-2.7b", tmp_path / "blip2", dtype="bfloat16")
    ann = generate_shapes(tmp_path / "images", 1)
    out = _evaluate_cli(folder, ann, "--dtype", "bfloat16", n=1)
    assert out["n_samples"] == 1 and out["bit_width"] == 4
    cap = load_captioner(folder, dtype="bfloat16")
    assert sum(p.numel() for p in cap.server.parameters()) + sum(p.numel() for p in cap.agent.parameters()) \
        == costs.model_costs("blip2-opt-2.7b").n_params
    pv = cap.processor.images([np.full((224, 224, 3), 128, dtype=np.uint8)])
    assert pv.shape == (1, 3, 224, 224)
    measured = measure_split_flops(cap, pv)
    same_cut = costs.model_costs("blip2-opt-2.7b", agent_modules=SPLIT_AGENT_MODULES["blip2"])
    assert measured["agent"] == pytest.approx(same_cut.n_flop_agent, rel=0.01)
    assert measured["vision_side"] / 1e9 == pytest.approx(costs.PAPER_COSTS["blip2-opt-2.7b"]["gflops"], rel=1e-3)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="config_name"):
        build_local_checkpoint("gpt-3", tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        build_local_checkpoint("git-base", tmp_path, dtype="int4")
    with pytest.raises(ValueError, match="vocab_size"):
        write_wordpiece_vocab(tmp_path / "v.txt", 50)


def test_random_model_keeps_tied_weights_and_parameter_count():
    from transformers import Blip2ForConditionalGeneration

    from qlib.captioning.local_checkpoint import random_model
    from qlib.captioning.model import tiny_blip2_config

    cfg = tiny_blip2_config(50)
    cfg.text_config.tie_word_embeddings = True  # as OPT-2.7B: the LM head is the input embedding
    fast = random_model(cfg, seed=1)
    ref = Blip2ForConditionalGeneration(cfg)
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert fast.get_output_embeddings().weight is fast.get_input_embeddings().weight
    # seeded: the same weights twice, norm gains at one, biases at zero
    again = random_model(cfg, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(fast.parameters(), again.parameters()))
    assert torch.all(fast.vision_model.post_layernorm.weight == 1)


def test_flops_of_a_blip2_shaped_split_match_model_costs():
    # BLIP-2's Q-Former feeds a parameter (the query tokens) to a module: counting must still work
    from qlib.captioning.local_checkpoint import random_model
    from qlib.captioning.model import SplitCaptioner, TinyProcessor, WordTokenizer, tiny_blip2_config

    cfg = tiny_blip2_config(50)
    cap = SplitCaptioner(random_model(cfg), TinyProcessor(WordTokenizer(["a"]), 64))
    measured = measure_split_flops(cap, torch.zeros(1, 3, 64, 64))
    same_cut = costs.model_costs(cfg, agent_modules=SPLIT_AGENT_MODULES["blip2"])
    assert measured["agent"] == pytest.approx(same_cut.n_flop_agent, rel=0.01)
    assert measured["vision_side"] == pytest.approx(costs.model_costs(cfg).n_flop_agent, rel=0.01)
    assert all(p.requires_grad for p in cap.server.parameters())  # flags restored
