"""Split co-inference of a real captioning model: agent = vision encoder, server = the rest
(paper Sec. II-A/B, eqs. 1–2; evaluated in Sec. VI-C).

Both model families of the paper go through one interface, :class:`SplitCaptioner`:

- ``GitForCausalLM`` (GIT): the agent runs the image encoder (a ViT; once per frame for
  video), the server runs the visual projection, the temporal frame embeddings and the text
  decoder;
- ``Blip2ForConditionalGeneration`` (BLIP-2): the agent runs the vision model (ViT), the
  server runs the Q-Former, the language projection and the language model (OPT).

The agent's encoder can be quantized to ``bit_width`` bits with :func:`qlib.quantize.quantize_module`
(uniform or power-of-two); the server is never touched. The split is made by moving the
vision module out of the transformers model into :attr:`SplitCaptioner.agent` and putting a
:class:`Relay` in its place, which hands the transmitted embedding :math:`\\mathbf o` (eq. 1)
to the unchanged server code (eq. 2). So the server runs exactly the library's own forward
and ``generate`` code, and the full-precision split output equals the unsplit model's.

At CI scale the model is a tiny GIT trained by ``python -m qlib.captioning train`` on the
generated shapes data (checkpoint in ``qlib/data/captioning/``); at paper scale pass a hub id
(``Salesforce/blip2-opt-2.7b``, ``microsoft/git-base-vatex``) or a local folder.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "WordTokenizer",
    "TinyProcessor",
    "Relay",
    "SplitCaptioner",
    "tiny_git_config",
    "tiny_blip2_config",
    "load_captioner",
    "quantize_embedding",
    "CHECKPOINTS",
    "DATA_DIR",
]

DATA_DIR = pathlib.Path(__file__).resolve().parents[1] / "data" / "captioning"
#: Checkpoints shipped with qlib (made by ``python -m qlib.captioning train``).
# Image captioners trained with seeds 0, 1, 2 (one recipe), and video captioners likewise (their own recipe).
CHECKPOINTS = {name: DATA_DIR / name for name in ("tiny-git", "tiny-git-seed1", "tiny-git-seed2", "tiny-git-video",
                                                  "tiny-git-video-seed1", "tiny-git-video-seed2")}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class WordTokenizer:
    """A word-level tokenizer for the generated captions (lower case, punctuation dropped).

    Ids 0–3 are ``[PAD]``, ``[BOS]``, ``[EOS]``, ``[UNK]``; words follow in sorted order.
    """

    SPECIALS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")
    pad_token_id, bos_token_id, eos_token_id, unk_token_id = 0, 1, 2, 3

    def __init__(self, words: Sequence[str]):
        self.vocab = list(self.SPECIALS) + sorted(set(words) - set(self.SPECIALS))
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @staticmethod
    def words(text: str) -> list[str]:
        return re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()

    @classmethod
    def from_captions(cls, captions: Sequence[str]) -> "WordTokenizer":
        return cls([w for c in captions for w in cls.words(c)])

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, texts: Sequence[str], max_length: int) -> torch.Tensor:
        """``[BOS] w1 … wn [EOS]`` padded with ``[PAD]`` (truncated to ``max_length``), as a LongTensor."""
        rows = []
        for t in texts:
            ids = [self.bos_token_id] + [self.index.get(w, self.unk_token_id) for w in self.words(t)]
            ids = (ids + [self.eos_token_id])[:max_length]
            rows.append(ids + [self.pad_token_id] * (max_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long)

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in (int(x) for x in ids):
            if i == self.eos_token_id:
                break
            if len(self.SPECIALS) <= i < len(self.vocab):  # skips specials and foreign ids (BLIP-2 image token)
                out.append(self.vocab[i])
        return " ".join(out)

    def batch_decode(self, rows: Any, skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(r) for r in rows]

    def save(self, folder: str | os.PathLike) -> None:
        pathlib.Path(folder, "vocab.json").write_text(json.dumps(self.vocab, indent=0))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "WordTokenizer":
        vocab = json.loads(pathlib.Path(folder, "vocab.json").read_text())
        tok = cls(vocab[len(cls.SPECIALS):])
        if tok.vocab != vocab:
            raise ValueError("vocab.json is not a sorted WordTokenizer vocabulary")
        return tok


class TinyProcessor:
    """Image preprocessing + word tokenizer of the CI-scale models (RGB in [0, 255] -> [-1, 1])."""

    def __init__(self, tokenizer: WordTokenizer, image_size: int = 64):
        self.tokenizer = tokenizer
        self.image_size = image_size

    def images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """``(B, 3, H, W)`` for images ``(H, W, 3)``, ``(B, F, 3, H, W)`` for clips ``(F, H, W, 3)``."""
        arr = np.stack([np.asarray(im) for im in images]).astype(np.float32)
        if arr.shape[-3:-1] != (self.image_size, self.image_size):
            raise ValueError(f"images must be {self.image_size}x{self.image_size} RGB, got shape {arr.shape[1:]}")
        x = torch.from_numpy(arr / 127.5 - 1.0)
        return x.permute(0, 3, 1, 2) if x.ndim == 4 else x.permute(0, 1, 4, 2, 3)

    def batch_decode(self, rows: Any, skip_special_tokens: bool = True) -> list[str]:
        return self.tokenizer.batch_decode(rows)


class _HubProcessor:
    """Adapter giving a transformers processor the two calls :class:`SplitCaptioner` needs."""

    def __init__(self, processor: Any):
        self.processor = processor

    def images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        arrs = [np.asarray(im) for im in images]
        if arrs[0].ndim == 4:  # clips: process all frames, then (B, F, C, H, W)
            n_frames = arrs[0].shape[0]
            flat = [f for clip in arrs for f in clip]
            pv = self.processor(images=flat, return_tensors="pt")["pixel_values"]
            return pv.reshape(len(arrs), n_frames, *pv.shape[1:])
        return self.processor(images=arrs, return_tensors="pt")["pixel_values"]

    def batch_decode(self, rows: Any, skip_special_tokens: bool = True) -> list[str]:
        return [s.strip() for s in self.processor.batch_decode(rows, skip_special_tokens=True)]


class Relay(nn.Module):
    """Stands in for the vision encoder on the server: returns the received embedding.

    The embedding arrives packed with one extra axis (``(B, 1, N, D)`` per image) so that the
    library's own shape dispatch (image vs. video) still works; the relay removes that axis.
    It has no parameters, so the server holds none of the agent's weights.
    """

    def forward(self, pixel_values: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        # clone(): GIT adds its temporal embedding in place; the transmitted tensor must stay intact.
        hidden = pixel_values[:, 0].clone()
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=hidden[:, 0])


def _family(model: nn.Module) -> str:
    kind = getattr(model.config, "model_type", "")
    if kind == "git":
        return "git"
    if kind in ("blip-2", "blip_2"):
        return "blip2"
    raise ValueError(f"model must be a GitForCausalLM or Blip2ForConditionalGeneration, got model_type={kind!r}")


def quantize_embedding(embedding: torch.Tensor, activation_bits: int, scheme: str = "uniform",
                       per_token: bool = False) -> torch.Tensor:
    """The transmitted embedding :math:`\\mathbf o` (eq. 1) quantized to ``activation_bits`` bits per element.

    Sign–magnitude levels of :func:`qlib.quantize.quantize` (uniform or power-of-two). Each
    sample's embedding is quantized on its own, as each agent sends its own: the largest
    magnitude :math:`M` is taken per sample (``per_token=False``, "per tensor") or per token
    (``per_token=True``, one scale per row of ``(N, D)``; the scales are side information of
    16 bits per token that :func:`qlib.system.embedding_bits` does not count).

    Parameters
    ----------
    embedding : torch.Tensor
        ``(B, N, D)`` (images) or ``(B, F, N, D)`` (clips).
    activation_bits : int
        Bits per element, sign included, in 1…16.
    scheme : {"uniform", "pot"}
    per_token : bool
    """
    from qlib.quantize import quantize

    if embedding.ndim not in (3, 4):
        raise ValueError(f"embedding must be (B, N, D) or (B, F, N, D), got shape {tuple(embedding.shape)}")
    if not isinstance(per_token, bool):
        raise ValueError(f"activation_per_token must be True or False, got {per_token!r}")
    rows = embedding.reshape(-1, embedding.shape[-1]) if per_token else embedding.reshape(embedding.shape[0], -1)
    return quantize(rows, activation_bits, scheme, per_channel=True).reshape(embedding.shape)


class SplitCaptioner:
    """A captioning model split into agent (vision encoder) and server (everything else).

    Parameters
    ----------
    model : GitForCausalLM or Blip2ForConditionalGeneration
        Consumed: its vision module moves to :attr:`agent` and a :class:`Relay` takes its place,
        so no weights are duplicated (BLIP-2 2.7B stays one copy).
    processor : TinyProcessor or a transformers processor
        Turns images into ``pixel_values`` and token ids into text.
    generate_kwargs : dict, optional
        Passed to ``generate`` (default: greedy, at most 20 new tokens).

    Notes
    -----
    Agent: :math:`\\mathbf o = f(\\mathbf x, \\hat{\\mathbf w})` (eq. 1); server:
    :math:`\\tilde{\\mathbf o} = \\tilde f(\\mathbf o, \\mathbf v)` (eq. 2).
    """

    def __init__(self, model: nn.Module, processor: Any, generate_kwargs: dict[str, Any] | None = None,
                 name: str = "model"):
        self.family = _family(model)
        self.name = name
        self.processor = processor if isinstance(processor, (TinyProcessor, _HubProcessor)) else _HubProcessor(processor)
        model.eval()
        if self.family == "git":
            self.agent: nn.Module = model.git.image_encoder
            model.git.image_encoder = Relay()
        else:
            self.agent = model.vision_model
            model.vision_model = Relay()
        self.server = model
        self.generate_kwargs = {"do_sample": False, "num_beams": 1, "max_new_tokens": 20}
        cfg = model.config.get_text_config() if self.family == "blip2" else model.config
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(cfg, key, None) is not None:
                self.generate_kwargs[key] = getattr(cfg, key)
        self.generate_kwargs.update(generate_kwargs or {})
        self._quantized: dict[tuple[int, str], nn.Module] = {}

    @property
    def device(self) -> torch.device:
        return next(self.server.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.agent.parameters()).dtype

    def agent_for(self, bit_width: int | None = None, scheme: str = "uniform") -> nn.Module:
        """The agent's encoder at ``bit_width`` bits (``None``: full precision), cached per setting."""
        if bit_width is None:
            return self.agent
        key = (int(bit_width), scheme)
        if key not in self._quantized:
            from qlib.quantize import quantize_module

            q, _ = quantize_module(self.agent, int(bit_width), scheme)
            self._quantized = {key: q.eval()}  # keep one: a BLIP-2 ViT-g copy is 4 GB in fp32
        return self._quantized[key]

    @torch.inference_mode()
    def encode(self, pixel_values: torch.Tensor, bit_width: int | None = None, scheme: str = "uniform") -> torch.Tensor:
        """Agent side (eq. 1): the embedding :math:`\\mathbf o`, ``(B, N, D)`` or ``(B, F, N, D)`` for clips."""
        agent = self.agent_for(bit_width, scheme)
        pv = pixel_values.to(self.device, self.dtype)
        if pv.ndim == 4:
            return agent(pv).last_hidden_state
        if pv.ndim == 5 and self.family == "git":
            return torch.stack([agent(pv[:, k]).last_hidden_state for k in range(pv.shape[1])], dim=1)
        raise ValueError(f"pixel_values must be (B, C, H, W), or (B, F, C, H, W) for GIT clips; got {tuple(pv.shape)}")

    @torch.inference_mode()
    def generate_from_embedding(self, embedding: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Server side (eq. 2): token ids generated from the received embedding."""
        packed = embedding.unsqueeze(1) if embedding.ndim == 3 else embedding.unsqueeze(2)
        return self.server.generate(pixel_values=packed, **{**self.generate_kwargs, **kwargs})

    def caption(self, images: Sequence[np.ndarray], bit_width: int | None = None, scheme: str = "uniform",
                batch_size: int = 50, activation_bits: int | None = None, activation_scheme: str = "uniform",
                activation_per_token: bool = False) -> list[str]:
        """Captions of images (``(H, W, 3)``) or clips (``(F, H, W, 3)``) through the split pipeline.

        ``activation_bits`` (1…16, default ``None`` = sent as computed) quantizes the transmitted
        embedding with :func:`quantize_embedding` (``activation_scheme``, ``activation_per_token``).
        """
        if activation_bits is not None:  # check before any work (errors name the parameter)
            from qlib.quantize import SCHEMES

            if (isinstance(activation_bits, bool) or not isinstance(activation_bits, (int, np.integer))
                    or not 1 <= activation_bits <= 16):
                raise ValueError(f"activation_bits must be an integer in 1…16 or None, got {activation_bits!r}")
            if activation_scheme not in SCHEMES:
                raise ValueError(f"activation_scheme must be one of {SCHEMES}, got {activation_scheme!r}")
        out: list[str] = []
        for start in range(0, len(images), batch_size):
            pv = self.processor.images(images[start: start + batch_size])
            emb = self.encode(pv, bit_width, scheme)
            if activation_bits is not None:
                emb = quantize_embedding(emb, int(activation_bits), activation_scheme, activation_per_token)
            ids = self.generate_from_embedding(emb)
            out += self.processor.batch_decode(ids.cpu(), skip_special_tokens=True)
        return out


def tiny_git_config(vocab_size: int, num_frames: int | None = None, patch_size: int = 8) -> Any:
    """The CI-scale GIT: ViT of width 64, 2 layers, ``patch_size``-pixel patches on 64x64 (8 gives 65
    tokens per frame, 16 gives 17), text decoder of width 128, 2 layers (about 0.6 M parameters).
    Patches of 8 pixels let the model read positions (scene accuracy ~0.8 against ~0.4 with 16)."""
    if patch_size not in (4, 8, 16, 32):
        raise ValueError(f"patch_size must divide the 64-pixel image: one of 4, 8, 16, 32, got {patch_size!r}")
    from transformers import GitConfig

    return GitConfig(
        vision_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 64, "patch_size": patch_size, "num_channels": 3},
        vocab_size=vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
        max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        bos_token_id=WordTokenizer.bos_token_id, eos_token_id=WordTokenizer.eos_token_id,
        pad_token_id=WordTokenizer.pad_token_id, num_image_with_embedding=num_frames,
    )


def tiny_blip2_config(vocab_size: int, image_size: int = 64) -> Any:
    """A BLIP-2-shaped model small enough for unit tests: ViT, Q-Former (4 queries) and OPT,
    each one layer of width 32; the image token is the last id of the vocabulary."""
    from transformers import Blip2Config

    return Blip2Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": image_size, "patch_size": 16},
        qformer_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "encoder_hidden_size": 32, "vocab_size": 64, "max_position_embeddings": 32},
        text_config={"model_type": "opt", "vocab_size": vocab_size + 1, "hidden_size": 32, "ffn_dim": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "word_embed_proj_dim": 32,
                     "max_position_embeddings": 64, "bos_token_id": WordTokenizer.bos_token_id,
                     "eos_token_id": WordTokenizer.eos_token_id, "pad_token_id": WordTokenizer.pad_token_id},
        num_query_tokens=4, image_token_index=vocab_size,
    )


def _model_class(config: Any) -> Any:
    # Import only the family asked for: each transformers model module costs ~1 s to import.
    kind = getattr(config, "model_type", "")
    if kind == "git":
        from transformers import GitForCausalLM

        return GitForCausalLM
    if kind in ("blip-2", "blip_2"):
        from transformers import Blip2ForConditionalGeneration

        return Blip2ForConditionalGeneration
    raise ValueError(f"model must be a GIT or BLIP-2 checkpoint, got model_type={kind!r}")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connection (fails fast offline; the hub
    client would otherwise retry for about a minute)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _from_hub(name: str, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    """Load a hub model from the local cache, else download it; offline: one clear sentence."""
    from transformers import AutoConfig, AutoProcessor

    for local_only in (True, False):
        if not local_only and not _hub_reachable():
            break
        try:
            config = AutoConfig.from_pretrained(name, local_files_only=local_only)
            net = _model_class(config).from_pretrained(name, dtype=dtype, local_files_only=local_only)
            return net, AutoProcessor.from_pretrained(name, local_files_only=local_only)
        except OSError:
            if not local_only:
                raise
    raise ValueError(
        f"could not load {name!r}: the Hugging Face hub is unreachable (no network) and the model is not "
        "in the local cache; run where huggingface.co is reachable, pass a local folder saved with "
        "save_pretrained, or use model='tiny-git'."
    )


def load_captioner(model: str | os.PathLike = "tiny-git", device: str = "cpu", dtype: str = "float32",
                   generate_kwargs: dict[str, Any] | None = None) -> SplitCaptioner:
    """Load a captioner and split it: a shipped name, a local folder or a Hugging Face hub id.

    Parameters
    ----------
    model : str or path
        A name of :data:`CHECKPOINTS` (the CI-scale checkpoints in ``qlib/data/captioning``: ``"tiny-git"``,
        ``"tiny-git-video"`` and their ``-seed1`` / ``-seed2`` retrainings),
        a folder written by ``save_pretrained`` (with a ``vocab.json`` for a word-level tokenizer),
        or a hub id such as ``"Salesforce/blip2-opt-2.7b"`` or ``"microsoft/git-base-vatex"``.
    device : str
        ``"cpu"`` or ``"cuda"``.
    dtype : {"float32", "float16", "bfloat16"}
        Weight dtype (paper scale on a GPU: ``"float16"``).

    Raises
    ------
    ValueError
        For an unknown dtype, or a hub id that cannot be fetched (no network and not cached):
        the message says what to pass instead.
    """
    from qlib.runtime import resolve_device

    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    device = resolve_device(device)
    name = str(model)
    path = CHECKPOINTS.get(name, pathlib.Path(name).expanduser())
    if path.is_dir():
        from transformers import AutoConfig

        from transformers.utils import logging as hf_logging

        config = AutoConfig.from_pretrained(path)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a bar for a local 2 MB file is noise (and varies in notebooks)
        try:
            net = _model_class(config).from_pretrained(path, dtype=_DTYPES[dtype])
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        if (path / "vocab.json").exists():
            processor: Any = TinyProcessor(WordTokenizer.load(path), config.vision_config.image_size)
        else:
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(path)
    else:
        if name in CHECKPOINTS or name.startswith((".", "/", "~")) or name.count("/") != 1:
            raise ValueError(f"model {name!r} is neither a shipped checkpoint ({', '.join(CHECKPOINTS)}), "
                             "an existing folder, nor a hub id of the form 'owner/name'")
        net, processor = _from_hub(name, _DTYPES[dtype])
    return SplitCaptioner(net.to(device), processor, generate_kwargs, name=name)
