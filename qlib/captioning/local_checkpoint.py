"""Full-size checkpoints built offline: the paper's architectures with random weights (paper Sec. VI-A).

The paper's captioners, GIT-base {microsoft/git-base(-vatex)} and BLIP-2 OPT-2.7B, need the
network to download. Their *architectures* do not: :func:`build_local_checkpoint` builds
either one from the config shipped in ``qlib/data/configs`` with random weights, writes a
tokenizer and an image processor made locally (a BERT-style word-piece vocabulary for GIT,
a byte-level BPE for BLIP-2's OPT; the CLIP normalisation both models use, at the config's
image size) and saves everything with ``save_pretrained``. The folder then goes through the
very code path a hub checkpoint takes (``load_captioner``, ``python -m qlib.captioning
evaluate --model FOLDER``): every shape, dtype and processing step is the real one, only
the weights (hence the captions) are meaningless.

:func:`measure_split_flops` counts, with :class:`torch.utils.flop_counter.FlopCounterMode`,
the FLOPs of a real split forward pass (agent: the vision encoder; server: the first
generated token), to compare with :func:`qlib.costs.model_costs`, which counts on the meta
device.

Command line::

    python -m qlib.captioning.local_checkpoint git-base OUT_DIR [--dtype float32] [--seed 0]
    python -m qlib.captioning evaluate --model OUT_DIR --data captions.json --n-samples 2 --bit-width 4

Measured on a 2-core CPU (one thread): GIT-base builds in ~15 s (0.71 GB); BLIP-2 OPT-2.7B in
bfloat16 builds, captions one image through ``evaluate --dtype bfloat16`` and has its FLOPs
counted in ~3 min on a quiet machine (7.7 GB on disk, ~18 GB peak RAM; ~10 min under load). On a GPU, ``--device cuda --dtype
float16`` is the same command; it is untested here (no GPU was available).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import sys
import time
import warnings
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "LOCAL_CONFIGS",
    "CLIP_MEAN",
    "CLIP_STD",
    "build_local_checkpoint",
    "random_model",
    "write_wordpiece_vocab",
    "SPLIT_AGENT_MODULES",
    "measure_split_flops",
    "time_agent",
    "time_agent_precisions",
    "main",
]

#: Configs this module builds (the shipped ones of :mod:`qlib.costs`).
LOCAL_CONFIGS = ("git-base", "git-base-vatex", "blip2-opt-2.7b")
#: OpenAI CLIP's pixel normalisation: the image processors of GIT and BLIP-2 on the hub use it.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' info/warning chatter (e.g. the torchvision fallback notice) for a block."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Writing model shards" bars vary from run to run in notebooks
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(prev)


@torch.no_grad()
def _cheap_init(model: nn.Module, std: float, seed: int) -> None:
    """N(0, std²) matrices and embeddings, unit norm gains, zero biases, from one seeded generator.

    Written by hand because the library's initialisation is what we skip: it runs several
    passes per tensor (kaiming, then the model's own init), minutes for 3.7 B parameters on
    two cores; one ``normal_`` per tensor, in a fixed order, is all random weights need.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        if isinstance(owner, (nn.LayerNorm, nn.GroupNorm)) or "norm" in type(owner).__name__.lower():
            p.fill_(1.0 if leaf == "weight" else 0.0)
        elif leaf == "bias":
            p.zero_()
        elif p.dtype in (torch.float32, torch.float64):
            p.normal_(0.0, std, generator=gen)
        else:  # normal_ with a CPU generator needs float32 for bf16/fp16 on some builds: draw in chunks
            flat = p.view(-1)
            for start in range(0, flat.numel(), 1 << 24):
                chunk = flat[start: start + (1 << 24)]
                chunk.copy_(torch.empty(chunk.shape, dtype=torch.float32).normal_(0.0, std, generator=gen))


def random_model(config: Any, dtype: str = "float32", seed: int = 0) -> nn.Module:
    """The model of ``config`` with random weights, built without the library's slow initialisation.

    The modules are created in ``dtype`` with initialisation switched off
    (``transformers.initialization.no_init_weights``: memory is allocated, not written), then
    every parameter gets one seeded draw (:func:`_cheap_init`); buffers (position ids) are
    created by the constructors as usual.
    """
    from qlib.captioning.model import _model_class

    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    cls = _model_class(config)
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers: the library initialises (slower, same result type)
        no_init_weights = contextlib.nullcontext
    torch.manual_seed(seed)
    with _default_dtype(_DTYPES[dtype]), no_init_weights(), _quiet_transformers():
        model = cls(config)
    std = float(getattr(config, "initializer_range", 0.02) or 0.02)
    _cheap_init(model, std, seed)
    model.tie_weights()  # skipped with the initialisation: OPT's head shares the input embedding
    return model.eval()


def write_wordpiece_vocab(path: str | os.PathLike, vocab_size: int) -> pathlib.Path:
    """A BERT-uncased-shaped ``vocab.txt`` of ``vocab_size`` lines, written locally.

    Ids 0 ``[PAD]``, 100 ``[UNK]``, 101 ``[CLS]``, 102 ``[SEP]``, 103 ``[MASK]`` sit where
    ``bert-base-uncased`` has them (GIT's config uses 101/102 as BOS/EOS), 1–99 are
    ``[unusedN]``; then the 26 letters, 10 digits and their ``##`` continuations (so any
    lower-case ASCII word tokenizes), then filler word pieces ``w<i>``.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 200:
        raise ValueError(f"vocab_size must be an integer >= 200 (BERT's specials sit at 0..103), got {vocab_size!r}")
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += chars + [f"##{c}" for c in chars] + list(".,!?'-")
    tokens += [f"w{i}" for i in range(vocab_size - len(tokens))]
    out = pathlib.Path(path)
    out.write_text("\n".join(tokens[:vocab_size]) + "\n")
    return out


def _git_processor(config: Any, folder: pathlib.Path) -> Any:
    from transformers import BertTokenizer, GitProcessor

    try:  # the PIL image processor: the default one needs torchvision, which the book does not install
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor

    size = int(config.vision_config.image_size)
    vocab = write_wordpiece_vocab(folder / "vocab.txt", int(config.vocab_size))
    tokenizer = BertTokenizer(str(vocab), do_lower_case=True, model_max_length=512)
    image = ImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                           image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    return GitProcessor(image, tokenizer)


def _byte_bpe_tokenizer(vocab_size: int, specials: dict[int, str]) -> Any:
    """A byte-level BPE (GPT-2 style, as OPT uses) of exactly ``vocab_size`` ids, made locally:
    the 256 byte symbols, merges of letter pairs up to the size, specials at their ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab: dict[str, int] = {}
    for i, tok in specials.items():
        vocab[tok] = i
    free = (i for i in range(vocab_size) if i not in specials)
    for sym in sorted(alphabet):
        vocab[sym] = next(free)
    merges: list[tuple[str, str]] = []
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ"]
    for a in letters:
        for b in letters[:-1]:
            if a + b in vocab:
                continue
            try:
                vocab[a + b] = next(free)
            except StopIteration:
                break
            merges.append((a, b))
    for i in free:
        vocab[f"<filler{i}>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=specials[2], eos_token=specials[2],
                                   pad_token=specials[1], unk_token=specials[3])


def _blip2_processor(config: Any) -> Any:
    from transformers import Blip2Processor

    try:
        from transformers import BlipImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import BlipImageProcessor as ImageProcessor

    size = int(config.vision_config.image_size)
    text = config.text_config
    specials = {1: "<pad>", 2: "</s>", 3: "<unk>", 0: "<s>", int(config.image_token_index): "<image>"}
    tokenizer = _byte_bpe_tokenizer(int(config.image_token_index) + 1, specials)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.image_token = "<image>"
    image = ImageProcessor(size={"height": size, "width": size}, image_mean=list(CLIP_MEAN),
                           image_std=list(CLIP_STD), do_convert_rgb=True)
    del text
    return Blip2Processor(image, tokenizer, num_query_tokens=int(config.num_query_tokens))


def build_local_checkpoint(config_name: str, out_dir: str | os.PathLike, dtype: str = "float32",
                           seed: int = 0) -> pathlib.Path:
    """Build a full-size model with random weights and save it, with its processor, to ``out_dir``.

    Parameters
    ----------
    config_name : {"git-base", "git-base-vatex", "blip2-opt-2.7b"}
        A config shipped in ``qlib/data/configs`` (GIT-base 176.6 M parameters, 0.71 GB in
        fp32; BLIP-2 3.74 B, 7.5 GB in bfloat16).
    out_dir : path
        Folder to write (created; existing files are overwritten).
    dtype : {"float32", "float16", "bfloat16"}
        Weight dtype; BLIP-2 on a CPU: ``"bfloat16"``.
    seed : int
        Seed of the random weights.

    Returns
    -------
    pathlib.Path
        The folder, loadable with ``qlib.captioning.load_captioner(folder)``.

    Raises
    ------
    ValueError
        For an unknown ``config_name`` or ``dtype``.
    """
    from qlib.costs import load_config

    if config_name not in LOCAL_CONFIGS:
        raise ValueError(f"config_name must be one of {', '.join(LOCAL_CONFIGS)}, got {config_name!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    folder = pathlib.Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config = load_config(config_name)
    with _quiet_transformers():
        processor = _git_processor(config, folder) if config.model_type == "git" else _blip2_processor(config)
        model = random_model(config, dtype, seed)
        model.config.dtype = dtype
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    (folder / "qbook_local.json").write_text(json.dumps(
        {"config": config_name, "dtype": dtype, "seed": seed, "weights": "random (qlib.captioning.local_checkpoint)"}))
    return folder


#: The modules :class:`~qlib.captioning.model.SplitCaptioner` runs on the agent, per family: pass
#: them as ``agent_modules`` to :func:`qlib.costs.model_costs` to count the same split.
SPLIT_AGENT_MODULES = {"git": ("image_encoder",), "blip2": ("vision_model",)}


def _count_cpu_flash_attention() -> None:
    """Teach FlopCounterMode the CPU flash-attention kernel (once per process).

    On real CPU tensors ``scaled_dot_product_attention`` dispatches to
    ``aten._scaled_dot_product_flash_attention_for_cpu``, which torch's flop registry lacks
    (it has the CUDA kernels), so attention would count as zero FLOPs; on the meta device the
    same call decomposes into ``bmm`` and is counted. The formula is torch's own for SDPA.
    """
    from torch.utils import flop_counter as fc

    packet = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if packet is None or packet in fc.flop_registry or not hasattr(fc, "sdpa_flop_count"):
        return

    @fc.register_flop_formula(packet)
    def _cpu_flash_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):  # noqa: ANN001
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def measure_split_flops(captioner: Any, pixel_values: torch.Tensor) -> dict[str, Any]:
    """FLOPs of one real split pass: the agent's encoder, then the server's first generated token.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per multiply-add,
    matrix products, convolutions and attention) on the actual tensors, the way
    :func:`qlib.costs.model_costs` counts on the meta device.

    Returns
    -------
    dict
        ``"agent"``: :math:`N_{\\mathrm{FLOP}}` of eq. (4) for the captioner's cut (the vision
        encoder); ``"server"``: :math:`\\tilde N_{\\mathrm{FLOP}}` of eq. (5), the first token;
        ``"vision_side"``: the agent plus the server modules that :mod:`qlib.costs` puts on the
        vision side (projection, Q-Former), the split of the paper's FLOP figures;
        ``"vision_on_server"``: FLOPs of each of those server modules. All for the batch given.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from qlib.costs import AGENT_MODULE_NAMES

    # FlopCounterMode's module tracker hooks autograd for every input that requires grad; a
    # parameter used as an input (BLIP-2's query tokens) then fails under no_grad. Counting
    # needs no grads: switch them off for the count and restore the flags afterwards.
    _count_cpu_flash_attention()
    # Vision-side modules the server runs (GIT's projection; BLIP-2's Q-Former and projection),
    # outermost only. Their FLOPs are read off the running counter by hooks: FlopCounterMode's
    # own per-module names depend on how generate() calls them (through the root or directly).
    named = [(n, m) for n, m in captioner.server.named_modules() if n and any(
        part in AGENT_MODULE_NAMES for part in n.split("."))]
    vision = [(n, m) for n, m in named if not any(n.startswith(o + ".") for o, _ in named)]
    spent: dict[str, float] = {n: 0.0 for n, _ in vision}
    counter = FlopCounterMode(display=False)
    hooks = []
    for n, m in vision:
        hooks.append(m.register_forward_pre_hook(
            lambda mod, args, n=n: spent.__setitem__(n, spent[n] - counter.get_total_flops())))
        hooks.append(m.register_forward_hook(
            lambda mod, args, out, n=n: spent.__setitem__(n, spent[n] + counter.get_total_flops())))
    params = [p for m in (captioner.agent, captioner.server) for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        with FlopCounterMode(display=False) as agent_count:
            embedding = captioner.encode(pixel_values)
        with counter:
            captioner.generate_from_embedding(embedding, max_new_tokens=1, min_new_tokens=1)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        for h in hooks:
            h.remove()
    agent = float(agent_count.get_total_flops())
    return {"agent": agent, "server": float(counter.get_total_flops()),
            "vision_side": agent + sum(spent.values()), "vision_on_server": {n: float(v) for n, v in spent.items()}}


def time_agent(agent: nn.Module, pixel_values: torch.Tensor, repeats: int = 3) -> float:
    """Median wall time (s) of the agent's encoder on ``pixel_values`` (one warm-up run first).

    Timings vary from run to run: show them in cells tagged ``nbval-ignore-output``; tests never
    assert them.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    dtype = next(agent.parameters()).dtype
    pv = pixel_values.to(dtype)
    frames = [pv[:, k] for k in range(pv.shape[1])] if pv.ndim == 5 else [pv]
    with torch.inference_mode():
        for f in frames:
            agent(f)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for f in frames:
                agent(f)
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_agent_precisions(captioner: Any, pixel_values: torch.Tensor, bit_width: int = 4,
                          repeats: int = 3) -> dict[str, float]:
    """Agent wall time at full precision, with ``bit_width``-bit weights as the book quantizes
    them, and with torch's dynamic int8 kernels (a check of eq. 4's ``b̂/b`` scaling).

    The book's quantizer (:func:`qlib.quantize.quantize_module`) *simulates* ``bit_width``-bit
    weights: the values are rounded to the grid but stored and multiplied in the original
    dtype, so it cannot be faster. Only a kernel that computes in fewer bits saves time; on a
    CPU that is int8 (``torch.ao.quantization.quantize_dynamic``: int8 weights, activations
    quantized on the fly).

    Returns
    -------
    dict
        ``{"full precision": s, f"{bit_width}-bit simulated": s, "int8 dynamic": s}`` (median
        seconds; full precision is the model's dtype, the int8 model starts from fp32);
        the int8 entry is left out where this torch build has no int8 CPU kernels.
    """
    import copy

    out = {"full precision": time_agent(captioner.agent_for(None), pixel_values, repeats),
           f"{bit_width}-bit simulated": time_agent(captioner.agent_for(bit_width), pixel_values, repeats)}
    try:
        with warnings.catch_warnings():  # torch.ao's eager quantization warns that it moves to torchao
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic

            int8 = quantize_dynamic(copy.deepcopy(captioner.agent).float(), {nn.Linear}, dtype=torch.qint8)
            out["int8 dynamic"] = time_agent(int8, pixel_values.float(), repeats)
    except (ImportError, RuntimeError, NotImplementedError, AssertionError):
        pass  # no int8 kernels in this build
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qlib.captioning.local_checkpoint",
                                description="Build a full-size captioner with random weights, offline.")
    p.add_argument("config", choices=LOCAL_CONFIGS)
    p.add_argument("out_dir")
    p.add_argument("--dtype", default="float32", choices=sorted(_DTYPES))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    folder = build_local_checkpoint(args.config, args.out_dir, args.dtype, args.seed)
    size = sum(f.stat().st_size for f in folder.iterdir()) / 1e9
    print(f"{args.config} ({args.dtype}, random weights) written: {size:.2f} GB in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
