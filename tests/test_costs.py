"""Unit tests of qlib.costs: parameter counts of the shipped configs (paper Sec. VI-A), the
agent/server FLOP split counted on meta-device models, hand-checked FLOPs, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from qlib import costs
from qlib.costs import PAPER_COSTS, SHIPPED_CONFIGS, load_config, model_costs


@pytest.fixture(scope="module")
def blip2():
    return model_costs("blip2-opt-2.7b")


@pytest.fixture(scope="module")
def git_vatex():
    return model_costs("git-base-vatex")


def test_shipped_configs_exist_and_load_offline():
    for short, hub in SHIPPED_CONFIGS.items():
        path = costs.CONFIG_DIR / f"{short}.json"
        assert path.stat().st_size < 10_000
        d = json.loads(path.read_text())
        assert d["model_type"] in {"blip-2", "git"}
        # the hub id reads the same shipped file
        assert load_config(hub).to_dict() == load_config(short).to_dict()


def test_blip2_parameters_within_one_percent_of_paper(blip2):
    assert blip2.n_params == 3_744_761_856
    assert abs(blip2.n_params / PAPER_COSTS["blip2-opt-2.7b"]["n_params"] - 1) < 0.01
    assert blip2.n_params_agent + blip2.n_params_server == blip2.n_params
    assert set(blip2.agent_modules) == {"vision_model", "qformer", "query_tokens", "language_projection"}
    assert blip2.server_modules == ("language_model",)


def test_git_parameters_within_one_percent_of_paper(git_vatex):
    base = model_costs("git-base")
    assert base.n_params == 176_619_066
    # GIT-VaTeX adds 6 temporal embeddings of width 768
    assert git_vatex.n_params - base.n_params == 6 * 768
    for c in (base, git_vatex):
        assert abs(c.n_params / PAPER_COSTS["git-base"]["n_params"] - 1) < 0.01
    assert "git.image_encoder" in git_vatex.agent_modules
    assert "git.encoder" in git_vatex.server_modules and "output" in git_vatex.server_modules


def test_vision_side_flops_reproduce_the_papers_first_token_figures(blip2, git_vatex):
    # The paper's "GFLOPs to generate the first token" are the vision side alone (see chapter).
    assert blip2.n_flop_agent / 1e9 == pytest.approx(533.66, rel=1e-3)
    assert git_vatex.n_frames == 6
    assert git_vatex.n_flop_agent / 1e9 == pytest.approx(212.27, rel=1e-3)
    # ... and a full first-token pass is far above them
    assert blip2.n_flop_total / 1e9 > 700
    assert git_vatex.n_flop_total / 1e9 > 330


def test_blip2_vision_encoder_flops_by_hand(blip2):
    # ViT-g/14 at 224 px: 257 tokens, 39 layers, width 1408, MLP 6144, 2 FLOPs per MAC.
    t, d, m, layers = 257, 1408, 6144, 39
    per_layer = 2 * t * (4 * d * d + 2 * d * m) + 2 * 2 * t * t * d  # linears + QK^T and AV
    patch = 2 * 256 * (3 * 14 * 14) * d
    assert blip2.flops_by_module["vision_model"] == pytest.approx(layers * per_layer + patch, rel=1e-9)


def test_blip2_server_is_opt_on_queries_plus_prompt(blip2):
    # OPT-2.7B: 32 layers, width 2560, FFN 10240, on 32 query slots + 1 BOS token; head at the last position.
    n, d, f, layers, vocab = 33, 2560, 10240, 32, 50304
    expected = layers * (2 * n * (4 * d * d + 2 * d * f) + 2 * 2 * n * n * d) + 2 * d * vocab
    assert blip2.server_positions == 33 and blip2.head_last_position_only
    assert blip2.n_flop_server == pytest.approx(expected, rel=1e-9)


def test_flops_grow_with_frames_and_prompt_length(git_vatex):
    four = model_costs("git-base-vatex", n_frames=4)
    assert four.n_flop_agent == pytest.approx(git_vatex.n_flop_agent * 4 / 6, rel=1e-9)
    assert four.n_flop_server < git_vatex.n_flop_server
    longer = model_costs("blip2-opt-2.7b", prompt_len=8)
    assert longer.server_positions == 40
    assert longer.n_flop_agent == model_costs("blip2-opt-2.7b").n_flop_agent  # agent ignores the prompt
    assert longer.n_flop_server > model_costs("blip2-opt-2.7b").n_flop_server


def test_results_are_cached():
    assert model_costs("git-base") is model_costs("git-base")


def test_any_transformers_config_with_a_chosen_split():
    from transformers import BertConfig

    cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                     vocab_size=100, max_position_embeddings=32)
    c = model_costs(cfg, prompt_len=8, agent_modules=["encoder"])
    n, d, m = 8, 64, 128
    assert c.n_flop_agent == pytest.approx(2 * (2 * n * (4 * d * d + 2 * d * m) + 2 * 2 * n * n * d), rel=1e-9)
    assert c.agent_modules == ("encoder",)
    assert c.n_params == sum(p.numel() for p in costs.build_meta_model(cfg).parameters())


def test_dict_config_and_vision_config_dict():
    c = model_costs({"model_type": "git", "num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 2,
                     "intermediate_size": 64, "vocab_size": 50,
                     "vision_config": {"hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": 1,
                                       "num_attention_heads": 2, "image_size": 32, "patch_size": 16}})
    assert c.n_flop_agent > 0 and c.n_flop_server > 0 and c.server_positions == 1 + 5


def test_meta_mask_patch_is_undone():
    import transformers.masking_utils as mu

    before = mu.is_tracing
    model_costs("git-base", prompt_len=2)
    assert mu.is_tracing is before
    assert not mu.is_tracing(torch.empty(2, device="meta"))


def test_unknown_hub_id_offline_is_one_clear_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"cannot load the config of 'no-such-org/no-such-model'.*shipped names"):
        load_config("no-such-org/no-such-model")


@pytest.mark.parametrize("kwargs, name", [
    ({"n_frames": 0}, "n_frames"),
    ({"n_frames": 2.0}, "n_frames"),
    ({"prompt_len": 0}, "prompt_len"),
    ({"prompt_len": True}, "prompt_len"),
    ({"agent_modules": []}, "agent_modules"),
])
def test_bad_arguments_are_rejected(kwargs, name):
    with pytest.raises(ValueError, match=name):
        model_costs("git-base", **kwargs)


def test_more_frames_than_temporal_embeddings_is_rejected():
    with pytest.raises(ValueError, match="n_frames must be <= 1"):
        model_costs("git-base", n_frames=4)
    with pytest.raises(ValueError, match="n_frames must be <= 6"):
        model_costs("git-base-vatex", n_frames=7)


def test_no_agent_module_found_says_what_to_pass():
    with pytest.raises(ValueError, match="agent_modules"):
        model_costs("git-base", agent_modules=["no_such_module"])


def test_bad_config_inputs():
    with pytest.raises(ValueError, match="model_type"):
        load_config({"hidden_size": 3})
    with pytest.raises(ValueError, match="name_or_config"):
        load_config(3.5)
