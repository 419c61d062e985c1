"""Training recipe of the CI-scale captioners (``python -m qlib.captioning train``).

A tiny GIT (:func:`qlib.captioning.model.tiny_git_config`) learns to caption the generated
shapes images (or, with ``kind="video"``, the moving-shape clips, 4 frames each) from scratch:
AdamW with a one-cycle learning-rate schedule, teacher forcing on one randomly chosen reference
per sample and epoch, everything seeded, one torch thread. The result is a ``save_pretrained``
folder (config + safetensors weights, about 2.4 MB) plus ``vocab.json`` and ``train_log.json``
(recipe, loss curve, wall time, test metrics), which the book ships in ``qlib/data/captioning``.
The paper fine-tunes nothing (it uses pretrained BLIP-2 and GIT); this recipe only exists
because no pretrained captioner can be downloaded in CI.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any

import numpy as np
import torch

from qlib.captioning.data import load_frames, load_image, shapes_dataset
from qlib.captioning.model import SplitCaptioner, TinyProcessor, WordTokenizer, tiny_git_config

__all__ = ["train_captioner", "MAX_LENGTH"]

MAX_LENGTH = 20  # text tokens incl. BOS/EOS; the longest generated caption has 17


def _pixels(samples: list[Any], kind: str, n_frames: int) -> np.ndarray:
    if kind == "image":
        return np.stack([load_image(s.path) for s in samples])
    return np.stack([load_frames(s.path, n_frames) for s in samples])


def train_captioner(out_dir: str | os.PathLike, kind: str = "image", epochs: int = 70, seed: int = 0,
                    batch_size: int = 64, lr: float = 1e-3, n_frames: int = 4, n_train: int | None = None,
                    threads: int = 1, log_every: int = 100, verbose: bool = True,
                    patch_size: int = 8) -> dict[str, Any]:
    """Train a tiny GIT on the generated shapes data and save it to ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Folder for ``config.json``, ``model.safetensors``, ``vocab.json``, ``train_log.json``.
    kind : {"image", "video"}
        Shapes images or moving-shape clips (``n_frames`` frames per clip).
    epochs : int
        Passes over the 4,000 training samples (>= 1). The shipped image captioners use 70.
    seed : int
        Seeds initialisation, batch order and the reference drawn per sample.
    patch_size : int
        Vision patch size in pixels (8: 65 image tokens per frame; the shipped image captioners).

    Returns
    -------
    dict
        The training log (also written to ``train_log.json``).
    """
    import qlib
    from qlib.captioning.metrics import evaluate_captions

    if kind not in ("image", "video"):
        raise ValueError(f"kind must be 'image' or 'video', got {kind!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    qlib.setup(seed=seed, threads=threads)
    from transformers import GitForCausalLM

    train = shapes_dataset(kind, "train", n=n_train)
    test = shapes_dataset(kind, "test")
    tokenizer = WordTokenizer.from_captions([r for s in train for r in s.references])
    processor = TinyProcessor(tokenizer)
    pixels = processor.images(_pixels(train, kind, n_frames))
    n_refs = min(len(s.references) for s in train)
    tokens = torch.stack([tokenizer.encode(s.references[:n_refs], MAX_LENGTH) for s in train])  # (N, R, L)
    config = tiny_git_config(len(tokenizer), n_frames if kind == "video" else None, patch_size=patch_size)
    model = GitForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    steps_per_epoch = int(np.ceil(len(train) / batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=gen)
        pick = torch.randint(n_refs, (len(train),), generator=gen)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size: (step + 1) * batch_size]
            ids = tokens[idx, pick[idx]]
            mask = (ids != tokenizer.pad_token_id).long()
            labels = ids.masked_fill(mask == 0, -100)
            loss = model(input_ids=ids, attention_mask=mask, pixel_values=pixels[idx], labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            k = epoch * steps_per_epoch + step + 1
            if verbose and (k % log_every == 0 or k == epochs * steps_per_epoch):
                print(f"epoch {epoch + 1}/{epochs} step {k}: loss {np.mean(losses[-log_every:]):.4f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    train_time = time.perf_counter() - t0
    model.eval()
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # bars for a 2 MB local file are noise in the log
    model.save_pretrained(out)
    tokenizer.save(out)
    # Evaluate the saved model through the split pipeline, exactly as users will load it.
    split = SplitCaptioner(GitForCausalLM.from_pretrained(out), processor, name=str(out.name))
    captions = split.caption(list(_pixels(test, kind, n_frames)))
    metrics = evaluate_captions(captions, [s.references for s in test], scenes=[s.scene for s in test])
    log = {"kind": kind, "epochs": epochs, "seed": seed, "patch_size": patch_size, "batch_size": batch_size, "lr": lr, "n_frames": n_frames,
           "n_train": len(train), "n_params": n_params, "train_time_s": round(train_time, 1),
           "torch": torch.__version__, "final_loss": float(np.mean(losses[-steps_per_epoch:])),
           "loss_per_epoch": [float(np.mean(losses[e * steps_per_epoch:(e + 1) * steps_per_epoch]))
                              for e in range(epochs)],
           "test_metrics": metrics, "test_examples": [{"caption": c, "references": s.references}
                                                      for c, s in zip(captions[:5], test[:5])]}
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    if verbose:
        print(json.dumps({k: log[k] for k in ("train_time_s", "final_loss", "test_metrics")}, indent=1))
    return log
