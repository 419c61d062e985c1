"""Evaluation of the split captioner over bit-widths and quantizers, cached on disk (paper Sec. VI-C).

:func:`evaluate` scores one setting (the ``python -m qlib.captioning evaluate`` command);
:func:`sweep` scores many, with a tqdm progress bar and an on-disk JSON cache written
atomically (temporary file + ``os.replace``) after every setting, so an interrupted sweep
resumes where it stopped and a rerun costs nothing. Captions are cached as soon as they are
generated; the scores of all pending settings are then computed with one tokenizer call.

The cache key holds everything that changes a result: model (and, for a local checkpoint,
the hash of its weights), data set, number of samples, bit-width, quantizer and metric set.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
from typing import Any, Iterable, Sequence

import numpy as np

from qlib.captioning.data import Sample, cache_dir, load_frames, load_image, read_coco, read_vatex, shapes_dataset
from qlib.captioning.metrics import METRICS, evaluate_many
from qlib.captioning.model import CHECKPOINTS, SplitCaptioner, load_captioner

__all__ = ["load_samples", "load_pixels", "evaluate", "sweep", "SweepCache", "model_fingerprint", "Setting"]

#: One evaluation setting: (bit_width or None for full precision, quantizer scheme).
Setting = tuple[Any, str]


def load_samples(data: str | os.PathLike = "shapes", n_samples: int | None = None, split: str | None = None,
                 image_root: str | os.PathLike | None = None) -> tuple[list[Sample], str, str]:
    """Samples of a data set, its kind (``"image"``/``"video"``) and an identifier for cache keys.

    ``data`` is ``"shapes"`` / ``"shapes-video"`` (the generated test sets), a COCO-format JSON
    (or Karpathy's ``dataset_coco.json``; ``split="test"`` for the paper's 5,000 images) or a
    VaTeX-style JSON list (clips under ``image_root``, default the JSON's folder).
    """
    if n_samples is not None and (not isinstance(n_samples, (int, np.integer)) or n_samples < 1):
        raise ValueError(f"n_samples must be an integer >= 1 or None, got {n_samples!r}")
    name = str(data)
    if name in ("shapes", "shapes-video"):
        kind = "image" if name == "shapes" else "video"
        return shapes_dataset(kind, split or "test", n=n_samples), kind, f"{name}-{split or 'test'}"
    path = pathlib.Path(name).expanduser()
    if not path.is_file():
        raise ValueError(f"data must be 'shapes', 'shapes-video' or an existing annotation JSON, got {name!r}")
    head = json.loads(path.read_text())
    if isinstance(head, list):
        return read_vatex(path, image_root, limit=n_samples), "video", f"{path.resolve()}"
    return read_coco(path, image_root, split=split, limit=n_samples), "image", f"{path.resolve()}:{split}"


def load_pixels(samples: Sequence[Sample], kind: str, n_frames: int = 4) -> list[np.ndarray]:
    """Decoded inputs: ``(H, W, 3)`` images or ``(n_frames, H, W, 3)`` clips (uniformly sampled frames)."""
    if kind == "image":
        return [load_image(s.path) for s in samples]
    return [load_frames(s.path, n_frames) for s in samples]


def model_fingerprint(model: str | os.PathLike) -> str:
    """Name of a hub model, or name + short hash of a local checkpoint's weights."""
    name = str(model)
    path = CHECKPOINTS.get(name, pathlib.Path(name).expanduser())
    weights = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not weights:
        return name
    h = hashlib.sha256()
    for w in weights:
        h.update(w.read_bytes())
    return f"{pathlib.Path(name).name}@{h.hexdigest()[:12]}"


class SweepCache:
    """A JSON file of ``{key: {"captions": [...], "metrics": {...}}}``, rewritten atomically."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = pathlib.Path(path) if path is not None else None
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            try:
                self.entries = json.loads(self.path.read_text())
            except json.JSONDecodeError:  # a foreign or damaged file: start afresh, never crash
                self.entries = {}

    def get(self, key: str) -> dict[str, Any]:
        return self.entries.get(key, {})

    def put(self, key: str, **values: Any) -> None:
        self.entries.setdefault(key, {}).update(values)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.entries, fh)
            os.replace(tmp, self.path)  # atomic: readers see the old or the new file, never half of one
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise


def _key(model_id: str, data_id: str, n: int, setting: Setting, metrics: Sequence[str]) -> str:
    bits, scheme = setting
    return json.dumps({"model": model_id, "data": data_id, "n": n, "bit_width": bits,
                       "quantizer": scheme if bits is not None else "none", "metrics": list(metrics)}, sort_keys=True)


def _check_settings(settings: Iterable[Setting]) -> list[Setting]:
    out = []
    for bits, scheme in settings:
        if scheme not in ("uniform", "pot"):
            raise ValueError(f"quantizer must be 'uniform' or 'pot', got {scheme!r}")
        if bits is not None and (isinstance(bits, bool) or not isinstance(bits, (int, np.integer))
                                 or not 1 <= bits <= 16):
            raise ValueError(f"bit_width must be an integer in 1…16 or None (full precision), got {bits!r}")
        out.append((None if bits is None else int(bits), scheme))
    return out


def sweep(captioner: SplitCaptioner, samples: Sequence[Sample], settings: Iterable[Setting], kind: str = "image",
          data_id: str = "data", cache: str | os.PathLike | None = "auto", metrics: Sequence[str] = METRICS,
          progress: bool = True, batch_size: int = 50, model_id: str | None = None) -> dict[Setting, dict[str, Any]]:
    """Captions and scores of ``samples`` for every (bit_width, quantizer) setting, cached on disk.

    Parameters
    ----------
    captioner : SplitCaptioner
        The split model; its agent is quantized per setting, its server never.
    samples : list of Sample
        With references (and ``scene`` for generated data, which adds the accuracies).
    settings : iterable of (bit_width or None, "uniform" | "pot")
        ``None`` is full precision.
    cache : path, "auto" or None
        JSON cache file; ``"auto"`` = ``<cache_dir>/captioning/sweeps.json``; ``None`` = no cache.

    Returns
    -------
    dict
        ``{setting: {"captions": [...], "metrics": {...}}}`` in the order of ``settings``.
    """
    from tqdm import tqdm  # text bar: tqdm.auto warns in notebooks without ipywidgets

    settings = _check_settings(settings)
    if not samples:
        raise ValueError("samples must be non-empty")
    if cache == "auto":
        cache = cache_dir() / "captioning" / "sweeps.json"
    store = SweepCache(cache)
    model_id = model_id or model_fingerprint(captioner.name)
    n = len(samples)
    keys = {s: _key(model_id, data_id, n, s, metrics) for s in settings}
    pixels: list[np.ndarray] | None = None
    n_frames = getattr(captioner.server.config, "num_image_with_embedding", None) or 4
    # One bar step per setting, cached or not, refreshed at every step: the printed bar is then
    # the same on a fresh and on a cached run (notebook outputs must reproduce).
    for setting in tqdm(settings, desc="captioning", disable=not progress, mininterval=0, miniters=1):
        if "captions" in store.get(keys[setting]):
            continue
        if pixels is None:
            pixels = load_pixels(samples, kind, n_frames)
        captions = captioner.caption(pixels, bit_width=setting[0], scheme=setting[1], batch_size=batch_size)
        store.put(keys[setting], captions=captions)
    unscored = [s for s in settings if "metrics" not in store.get(keys[s])]
    if unscored:
        scenes = [s.scene for s in samples] if all(s.scene is not None for s in samples) else None
        scores = evaluate_many({s: store.get(keys[s])["captions"] for s in unscored},
                               [s.references for s in samples], scenes, metrics)
        for s in unscored:
            store.put(keys[s], metrics=scores[s])
    return {s: dict(store.get(keys[s])) for s in settings}


def evaluate(model: str | os.PathLike | None = None, data: str | os.PathLike = "shapes", bit_width: int | None = None,
             quantizer: str = "uniform", n_samples: int | None = None, device: str = "cpu", dtype: str = "float32",
             split: str | None = None, image_root: str | os.PathLike | None = None,
             metrics: Sequence[str] = METRICS, batch_size: int = 50, cache: str | os.PathLike | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Caption ``n_samples`` of ``data`` with ``model`` split at the vision encoder and score them.

    Defaults are the CI scale: the shipped tiny GIT on the generated shapes test set
    (``data="shapes-video"`` selects the tiny video GIT). Paper scale changes parameters only,
    e.g. ``model="Salesforce/blip2-opt-2.7b", data="dataset_coco.json", split="test",
    n_samples=5000, device="cuda", dtype="float16"``.

    Returns
    -------
    dict
        Metric names as keys (``"CIDEr"``, ``"BLEU-4"``, ``"METEOR"``, ``"ROUGE-L"``, and the
        scene accuracies on generated data), plus ``n_samples``, ``bit_width``, ``quantizer``,
        ``model``, ``data`` and ``examples`` (first three captions with their references).
    """
    setting = _check_settings([(bit_width, quantizer)])[0]
    samples, kind, data_id = load_samples(data, n_samples, split, image_root)
    if model is None:
        model = "tiny-git-video" if kind == "video" else "tiny-git"
    captioner = load_captioner(model, device=device, dtype=dtype)
    result = sweep(captioner, samples, [setting], kind, data_id, cache, metrics, progress, batch_size)[setting]
    out: dict[str, Any] = dict(result["metrics"])
    out.update({"n_samples": len(samples), "bit_width": setting[0],
                "quantizer": setting[1] if setting[0] is not None else None, "model": str(model), "data": str(data),
                "examples": [{"caption": c, "references": s.references}
                             for c, s in zip(result["captions"][:3], samples[:3])]})
    return out
