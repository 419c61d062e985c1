"""Evaluation of the split captioner over bit-widths and quantizers, cached on disk (paper Sec. VI-C).

:func:`evaluate` scores one setting (the ``python -m qlib.captioning evaluate`` command);
:func:`sweep` scores many, with a tqdm progress bar, serially or on a Ray cluster
(``workers=N``); :func:`run_sweep` does the same from a model name and a data set name (the
``python -m qlib.captioning sweep`` command). Captions are cached as soon as they are
generated and scores as soon as they are computed, so an interrupted sweep resumes where it
stopped and a rerun costs nothing.

The cache key holds everything that changes a result: the model's weights (hash of a local
checkpoint's files, the hub revision, or a hash of in-memory parameters), its dtype and device
type, the generation settings and batch size, the data (ids, references and a hash of the
image or clip files), the number of samples, the setting, and the versions of the code that
produces captions (:data:`CAPTION_CODE_VERSION`, a hash of the captioning and quantization
sources, qlib, torch, transformers). Scores are keyed additionally by the metric set and
the scoring code (a hash of the scoring sources, pycocoevalcap), so a change to the scorers
rescores cached captions instead of recaptioning.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import importlib.metadata
import json
import os
import pathlib
import shutil
import tempfile
import time
import warnings
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from qlib.captioning.data import Sample, cache_dir, load_frames, load_image, read_coco, read_vatex, shapes_dataset
from qlib.captioning.metrics import METRICS, SampleScores, _check_metrics, score_samples, summarize
from qlib.captioning.model import CHECKPOINTS, SplitCaptioner, load_captioner

__all__ = ["load_samples", "load_pixels", "evaluate", "sweep", "run_sweep", "ray_session", "parse_settings",
           "result_record", "SweepCache", "SweepFailed", "model_fingerprint", "data_fingerprint", "code_version",
           "Setting", "CAPTION_CODE_VERSION"]

#: One evaluation setting: (bit_width or None for full precision, quantizer scheme).
Setting = tuple[Any, str]

#: Bump when the captions of a setting change in a way the source hash of :func:`code_version`
#: cannot see (e.g. a change of a dependency's behaviour that qlib works around).
CAPTION_CODE_VERSION = 2

_HERE = pathlib.Path(__file__).resolve().parent
# Sources whose edits can change captions (model split, quantizer, image/clip decoding) and scores.
_CAPTION_SOURCES = (_HERE / "model.py", _HERE.parent / "quantize.py", _HERE / "data.py")
_SCORE_SOURCES = (_HERE / "metrics.py", _HERE / "data.py")


def load_samples(data: str | os.PathLike = "shapes", n_samples: int | None = None, split: str | None = None,
                 image_root: str | os.PathLike | None = None) -> tuple[list[Sample], str, str]:
    """Samples of a data set, its kind (``"image"``/``"video"``) and an identifier for cache keys.

    ``data`` is ``"shapes"`` / ``"shapes-video"`` (the generated test sets), a COCO-format JSON
    (or Karpathy's ``dataset_coco.json``; ``split="test"`` for the paper's 5,000 images) or a
    VaTeX-style JSON list (clips under ``image_root``, default the JSON's folder).
    """
    if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer))
                                  or n_samples < 1):
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


# --------------------------------------------------------------------------------------------- keys

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _file_hash(path: pathlib.Path) -> str:
    """sha256 of a file, memoized per (path, size, mtime) so repeated sweeps in one process read it once."""
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _FILE_HASHES[memo] = h.hexdigest()
    return _FILE_HASHES[memo]


def _files_of(path: pathlib.Path) -> list[pathlib.Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path] if path.exists() else []


def model_fingerprint(model: str | os.PathLike) -> str:
    """Name of a model plus what pins its weights: a hash of a local checkpoint's weight files,
    or the revision (commit) of a hub model in the local hub cache; the bare name otherwise."""
    name = str(model)
    path = CHECKPOINTS.get(name, pathlib.Path(name).expanduser())
    weights = sorted(p for ext in ("*.safetensors", "*.bin", "*.pt") for p in path.glob(ext)) if path.is_dir() else []
    if weights:
        h = hashlib.sha256()
        for w in weights:
            h.update(w.name.encode() + _file_hash(w).encode())
        return f"{pathlib.Path(name).name}@{h.hexdigest()[:16]}"
    if not path.exists() and name.count("/") == 1:
        try:  # the revision of the cached snapshot; no network (local_files_only)
            from transformers import AutoConfig

            revision = getattr(AutoConfig.from_pretrained(name, local_files_only=True), "_commit_hash", None)
        except Exception:  # not cached: the name is all we know
            revision = None
        if revision:
            return f"{name}@{revision}"
    return name


def _weights_id(captioner: SplitCaptioner) -> str:
    """What pins the captioner's weights: its checkpoint (files or hub revision), else a hash of
    its parameters (an in-memory model, e.g. a freshly initialised one in a test)."""
    name = str(captioner.name)
    path = CHECKPOINTS.get(name, pathlib.Path(name).expanduser())
    if path.is_dir() or (name.count("/") == 1 and not path.exists()):
        fp = model_fingerprint(name)
        if fp != name:
            return fp
        revision = getattr(captioner.server.config, "_commit_hash", None)
        if revision:
            return f"{name}@{revision}"
    return f"{name}#{_module_hash(captioner.agent, captioner.server)[:16]}"


def _module_hash(*modules: Any) -> str:
    """SHA-256 of the modules' parameters and buffers (names and values): equal hashes, equal weights."""
    import torch

    h = hashlib.sha256()
    for part in modules:
        for key, tensor in sorted(part.state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def data_fingerprint(samples: Sequence[Sample]) -> str:
    """Hash of a sample list: ids, references, scenes and the bytes of every image or clip file."""
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps([str(s.id), list(s.references), s.scene], sort_keys=True, default=str).encode())
        for f in _files_of(pathlib.Path(s.path)):
            h.update(f.name.encode() + _file_hash(f).encode())
    return h.hexdigest()[:16]


def _sources_hash(files: Iterable[pathlib.Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def code_version() -> dict[str, Any]:
    """Versions of the code that produces captions (part of every cache key)."""
    import torch
    import transformers

    import qlib

    return {"caption_code": CAPTION_CODE_VERSION, "sources": _sources_hash(_CAPTION_SOURCES),
            "qlib": qlib.__version__, "torch": torch.__version__, "transformers": transformers.__version__}


def _score_version() -> dict[str, Any]:
    return {"sources": _sources_hash(_SCORE_SOURCES), "pycocoevalcap": _version("pycocoevalcap")}


def _jsonable(value: Any) -> Any:
    """The value as JSON gives it back (tuples -> lists), so fresh and cached results compare equal."""
    return json.loads(json.dumps(value))


def _model_key(captioner: SplitCaptioner, model_id: str | None = None) -> dict[str, Any]:
    """The part of a cache key that the captioner determines (computed where it runs)."""
    return {"model": model_id or _weights_id(captioner), "dtype": str(captioner.dtype).removeprefix("torch."),
            "device": captioner.device.type, "generate": _jsonable(dict(sorted(captioner.generate_kwargs.items()))),
            "code": code_version()}


def _caption_key(model_key: Mapping[str, Any], data_id: str, data_hash: str, n: int, setting: Setting,
                 batch_size: int) -> dict[str, Any]:
    bits, scheme = setting
    return {**model_key, "data": data_id, "data_hash": data_hash, "n": n, "bit_width": bits,
            "quantizer": scheme if bits is not None else "none", "batch_size": batch_size}


def _score_key(caption_key: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, Any]:
    return {"captions": _digest(caption_key), "metrics": list(metrics), "scoring": _score_version()}


def _digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


# -------------------------------------------------------------------------------------------- cache


class SweepCache:
    """A folder of JSON files, one per cache entry: ``captions-<digest>.json`` holds
    ``{"key": ..., "captions": [...]}``, ``metrics-<digest>.json`` holds ``{"key": ..., "metrics": {...}}``
    (the summary) and ``samples-<digest>.json`` the per-sample scores behind it (``{"key": ..., "samples":
    {"components": ..., "corpus": ...}}``, so that a chapter takes intervals without scoring again).

    Why one file per entry, not one shared file with a lock (filelock) or a library store:
    each write is a temporary file renamed into place (``os.replace``, atomic), so concurrent
    runs, threads or Ray drivers never lose each other's entries and need no lock; a damaged
    file costs only its own entry, which is moved aside and recomputed. joblib.Memory pickles
    (version-fragile, unsafe to share) and deletes a damaged entry; diskcache (SQLite) is not
    a dependency. Plain JSON stays readable by anyone.

    ``path=None`` keeps the entries in memory only.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = pathlib.Path(path).expanduser() if path is not None else None
        self._memory: dict[str, Any] = {}
        if self.path is not None and self.path.exists() and not self.path.is_dir():
            # A single-file cache of an earlier qlib (keys without dtype/device/code version), or a
            # foreign file: never read, never overwritten; moved aside.
            self._move_aside(self.path, "a file where the cache folder belongs (an older single-file cache?)")

    def _file(self, kind: str, key: Mapping[str, Any]) -> pathlib.Path:
        assert self.path is not None
        return self.path / f"{kind}-{_digest(key)}.json"

    @staticmethod
    def _move_aside(path: pathlib.Path, reason: str) -> None:
        aside = path.with_name(f"{path.name}.damaged-{time.time_ns()}-{os.getpid()}")
        try:
            os.replace(path, aside)  # a fresh name: the damaged bytes are kept, never overwritten
        except FileNotFoundError:  # another process moved it first
            return
        warnings.warn(f"sweep cache: {path.name} is {reason}; moved aside to {aside.name} and recomputed",
                      RuntimeWarning, stacklevel=3)

    def get(self, kind: str, key: Mapping[str, Any], check: Callable[[Any], bool]) -> Any:
        """The stored value of ``kind`` under ``key`` (``None`` if absent); a damaged file is moved aside."""
        if self.path is None:
            return self._memory.get(_digest({"kind": kind, **key}))
        file = self._file(kind, key)
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            return None
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._move_aside(file, "not valid UTF-8 JSON (truncated or damaged)")
            return None
        if not isinstance(entry, dict) or entry.get("key") != _jsonable(dict(key)) or not check(entry.get(kind)):
            self._move_aside(file, f"not a {kind} entry of this key")
            return None
        return entry[kind]

    def put(self, kind: str, key: Mapping[str, Any], value: Any) -> None:
        """Store ``value`` (JSON) under ``key``, atomically."""
        if self.path is None:
            self._memory[_digest({"kind": kind, **key})] = _jsonable(value)
            return
        self.path.mkdir(parents=True, exist_ok=True)
        file = self._file(kind, key)
        fd, tmp = tempfile.mkstemp(prefix=file.name + ".", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"key": dict(key), kind: value}, fh)
            os.replace(tmp, file)  # atomic: readers see the old or the new file, never half of one
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise


def _captions_ok(n: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and len(v) == n and all(isinstance(c, str) for c in v)


def _metrics_ok(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) for k in v)


def _samples_ok(n: int) -> Callable[[Any], bool]:
    return lambda v: (isinstance(v, dict) and isinstance(v.get("components"), dict)
                      and isinstance(v.get("corpus"), dict)
                      and all(isinstance(c, list) and len(c) == n for c in v["components"].values()))


def _samples_to_json(scores: SampleScores) -> dict[str, Any]:
    # Python's json writes floats by repr, so the per-sample scores come back bit for bit.
    return {"components": {k: np.asarray(v, dtype=float).tolist() for k, v in scores.components.items()},
            "corpus": {k: float(v) for k, v in scores.corpus.items()}}


def _samples_from_json(value: Mapping[str, Any]) -> SampleScores:
    return SampleScores({k: np.asarray(v, dtype=float) for k, v in value["components"].items()},
                        dict(value["corpus"]))


def _check_settings(settings: Iterable[Setting]) -> list[Setting]:
    out = []
    for setting in settings:
        if not isinstance(setting, (tuple, list)) or len(setting) != 2:
            raise ValueError(f"settings must be (bit_width, quantizer) pairs, got {setting!r}")
        bits, scheme = setting
        if scheme not in ("uniform", "pot"):
            raise ValueError(f"quantizer must be 'uniform' or 'pot', got {scheme!r}")
        if bits is not None and (isinstance(bits, bool) or not isinstance(bits, (int, np.integer))
                                 or not 1 <= bits <= 16):
            raise ValueError(f"bit_width must be an integer in 1…16 or None (full precision), got {bits!r}")
        out.append((None if bits is None else int(bits), scheme))
    if len(set(out)) != len(out):
        raise ValueError(f"settings must not repeat, got {out}")
    return out


def parse_settings(bit_widths: str | Sequence[Any], quantizers: str | Sequence[str] = ("uniform",)) -> list[Setting]:
    """Settings of the grid ``bit_widths × quantizers`` (quantizer-major, as the CLI prints them).

    ``bit_widths`` is ``"1,2,4,8"`` or a list; ``"fp"`` / ``None`` is full precision (listed once).
    """
    def split(x: Any) -> list[Any]:
        return [t.strip() for t in x.split(",") if t.strip()] if isinstance(x, str) else list(x)

    bits_list, schemes = split(bit_widths), split(quantizers)
    if not bits_list or not schemes:
        raise ValueError(f"bit_widths and quantizers must be non-empty, got {bit_widths!r} and {quantizers!r}")
    parsed: list[Any] = []
    for b in bits_list:
        if b is None or (isinstance(b, str) and b.lower() in ("fp", "none", "full")):
            parsed.append(None)
        else:
            try:
                parsed.append(int(b))
            except (TypeError, ValueError):
                raise ValueError(f"bit_width must be an integer in 1…16 or 'fp' (full precision), "
                                 f"got {b!r}") from None
    settings: list[Setting] = [(None, schemes[0])] if None in parsed else []
    settings += [(b, q) for q in schemes for b in parsed if b is not None]
    return _check_settings(settings)


class SweepFailed(RuntimeError):
    """Some settings failed on every try; ``results`` holds the others, ``failed`` the error of each failure."""

    def __init__(self, failed: Mapping[Setting, str], results: Mapping[Setting, dict[str, Any]]):
        self.failed, self.results = dict(failed), dict(results)
        lines = "; ".join(f"bit_width={s[0]} quantizer={s[1]}: {msg}" for s, msg in self.failed.items())
        super().__init__(f"{len(self.failed)} of {len(self.failed) + len(self.results)} settings failed: {lines}")


# -------------------------------------------------------------------------------------------- sweep


def sweep(captioner: SplitCaptioner, samples: Sequence[Sample], settings: Iterable[Setting], kind: str = "image",
          data_id: str = "data", cache: str | os.PathLike | None = "auto", metrics: Sequence[str] = METRICS,
          progress: bool = True, batch_size: int = 50, model_id: str | None = None, *, workers: int = 0,
          address: str | None = None, gpus_per_worker: float | None = None, threads: int = 1, max_retries: int = 2,
          on_result: Callable[[Setting, dict[str, Any]], None] | None = None) -> dict[Setting, dict[str, Any]]:
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
        Cache folder (:class:`SweepCache`); ``"auto"`` = ``<cache_dir>/captioning/sweeps``; ``None`` = no cache.
    model_id : str, optional
        Overrides what identifies the weights in the cache key (default: checkpoint hash,
        hub revision, or a hash of the parameters).
    workers : int
        0 (default): caption in this process. ``N >= 1``: on Ray, ``N`` actors that each load
        the model once (by ``captioner.name``, so it must be a shipped name, a folder or a hub
        id) and take settings from a queue; see :func:`run_sweep` for ``address``,
        ``gpus_per_worker`` and ``max_retries``.
    on_result : callable, optional
        Called as ``on_result(setting, result)`` as each setting is done (completion order).

    Returns
    -------
    dict
        ``{setting: {"captions": [...], "metrics": {...}, "samples": SampleScores}}`` in the order of
        ``settings``; ``metrics`` holds every key :func:`qlib.captioning.metrics.evaluate_many` returns,
        ``samples`` the per-sample scores they summarize (:func:`qlib.captioning.metrics.score_samples`
        of the captions: feed them to ``summarize``, ``paired_difference`` or ``seed_summary``).

    Raises
    ------
    SweepFailed
        When some settings failed on every try (Ray only); the others are cached and in ``.results``.
    """
    settings = _check_settings(settings)
    metrics = _check_metrics(metrics)
    if not samples:
        raise ValueError("samples must be non-empty")
    gpus_per_worker = _check_workers(workers, gpus_per_worker, max_retries, captioner.device.type)
    key = _model_key(captioner, model_id)
    if not workers:
        return _serial(captioner, samples, settings, kind, data_id, cache, metrics, progress, batch_size, key,
                       on_result)
    spec = {"model": str(captioner.name), "device": captioner.device.type,
            "dtype": str(captioner.dtype).removeprefix("torch."), "generate_kwargs": dict(captioner.generate_kwargs),
            "n_frames": getattr(captioner.server.config, "num_image_with_embedding", None), "model_id": model_id}
    return _on_ray(spec, samples, settings, kind, data_id, cache, metrics, progress, batch_size, key,
                   workers, address, gpus_per_worker, threads, max_retries, on_result)


def _check_workers(workers: Any, gpus_per_worker: Any, max_retries: Any, device: str) -> float:
    """Check the Ray arguments; the GPUs per worker (``None``: one on a CUDA device, else none)."""
    if gpus_per_worker is None:
        gpus_per_worker = 1 if str(device).startswith("cuda") else 0
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (0: serial, in this process), got {workers!r}")
    if not isinstance(gpus_per_worker, (int, float)) or not gpus_per_worker >= 0:
        raise ValueError(f"gpus_per_worker must be a number >= 0, got {gpus_per_worker!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, (int, np.integer)) or max_retries < 0:
        raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    return gpus_per_worker


class _Plan:
    """Keys, cached entries and bookkeeping of one sweep, shared by the serial and the Ray path."""

    def __init__(self, samples: Sequence[Sample], settings: list[Setting], data_id: str,
                 cache: str | os.PathLike | None, metrics: Sequence[str], batch_size: int,
                 on_result: Callable[[Setting, dict[str, Any]], None] | None):
        if cache == "auto":
            cache = cache_dir() / "captioning" / "sweeps"
        self.store = SweepCache(cache)
        self.samples, self.settings, self.metrics, self.on_result = samples, settings, metrics, on_result
        self.data_id, self.data_hash, self.batch_size = data_id, data_fingerprint(samples), batch_size
        self.references = [s.references for s in samples]
        self.scenes = [s.scene for s in samples] if all(s.scene is not None for s in samples) else None
        self.results: dict[Setting, dict[str, Any]] = {}
        self.keys: dict[Setting, dict[str, Any]] = {}

    def set_model_key(self, model_key: Mapping[str, Any]) -> None:
        n = len(self.samples)
        self.keys = {s: _caption_key(model_key, self.data_id, self.data_hash, n, s, self.batch_size)
                     for s in self.settings}

    def cached_captions(self, s: Setting) -> list[str] | None:
        return self.store.get("captions", self.keys[s], _captions_ok(len(self.samples)))

    def cached_scores(self, s: Setting) -> tuple[dict[str, Any], SampleScores] | None:
        """The cached summary and per-sample scores of ``s``, or ``None`` unless both are cached."""
        key = _score_key(self.keys[s], self.metrics)
        summary = self.store.get("metrics", key, _metrics_ok)
        per = self.store.get("samples", key, _samples_ok(len(self.samples))) if summary is not None else None
        return None if per is None else (summary, _samples_from_json(per))

    def put_captions(self, s: Setting, captions: list[str]) -> None:
        self.store.put("captions", self.keys[s], captions)

    def score(self, runs: Mapping[Setting, list[str]]) -> None:
        """Score runs in one tokenizer call, cache the scores and finish those settings."""
        if not runs:
            return
        first: dict[tuple[str, ...], Setting] = {}  # identical captions score identically: score once
        for s, captions in runs.items():
            first.setdefault(tuple(captions), s)
        scored = score_samples({s: runs[s] for s in first.values()}, self.references, self.scenes, self.metrics)
        for s, captions in runs.items():
            per = scored[first[tuple(captions)]]
            key, summary = _score_key(self.keys[s], self.metrics), _jsonable(summarize(per))
            self.store.put("samples", key, _samples_to_json(per))
            self.store.put("metrics", key, summary)
            self.finish(s, captions, summary, per)

    def finish(self, s: Setting, captions: list[str], metrics: dict[str, Any], samples: SampleScores) -> None:
        self.results[s] = {"captions": list(captions), "metrics": dict(metrics), "samples": samples}
        if self.on_result is not None:
            self.on_result(s, self.results[s])

    def ordered(self) -> dict[Setting, dict[str, Any]]:
        return {s: self.results[s] for s in self.settings if s in self.results}


def _bar(settings: Sequence[Setting], progress: bool) -> Any:
    from tqdm import tqdm  # text bar: tqdm.auto warns in notebooks without ipywidgets

    # One bar step per setting, cached or not, refreshed at every step: the printed bar is then
    # the same on a fresh and on a cached run (notebook outputs must reproduce).
    return tqdm(total=len(settings), desc="captioning", disable=not progress, mininterval=0, miniters=1)


def _serial(captioner: SplitCaptioner, samples: Sequence[Sample], settings: list[Setting], kind: str, data_id: str,
            cache: Any, metrics: Sequence[str], progress: bool, batch_size: int, model_key: Mapping[str, Any],
            on_result: Any) -> dict[Setting, dict[str, Any]]:
    plan = _Plan(samples, settings, data_id, cache, metrics, batch_size, on_result)
    plan.set_model_key(model_key)
    pixels: list[np.ndarray] | None = None
    n_frames = getattr(captioner.server.config, "num_image_with_embedding", None) or 4
    captions: dict[Setting, list[str]] = {}
    # Settings whose quantized agents are equal bit for bit caption identically: caption once. (The
    # tiny GITs' PoT agents from 6 bits on: the extra levels, below 2^-30 of a tensor's maximum, hold
    # no weight, so 11 of the 16 PoT settings are one agent.)
    by_agent: dict[str, list[str]] = {}
    with _bar(settings, progress) as bar:
        for setting in settings:
            got = plan.cached_captions(setting)
            if got is None:
                agent = _module_hash(captioner.agent_for(*setting))
                got = by_agent.get(agent)
                if got is None:
                    if pixels is None:
                        pixels = load_pixels(samples, kind, n_frames)
                    got = captioner.caption(pixels, bit_width=setting[0], scheme=setting[1], batch_size=batch_size)
                    by_agent[agent] = got
                plan.put_captions(setting, got)
            captions[setting] = got
            bar.update(1)
    unscored = {}
    for s in settings:
        got_scores = plan.cached_scores(s)
        if got_scores is None:
            unscored[s] = captions[s]
        else:
            plan.finish(s, captions[s], *got_scores)
    plan.score(unscored)  # all pending settings in one tokenizer (JVM) call
    return plan.ordered()


# ---------------------------------------------------------------------------------------------- Ray


class _CaptionWorker:
    """A Ray actor: loads the captioner once, then captions one setting per call."""

    def __init__(self, model: str, device: str, dtype: str, generate_kwargs: dict[str, Any], threads: int):
        import qlib

        qlib.setup(seed=0, threads=threads, device=device)
        self.captioner = load_captioner(model, device=device, dtype=dtype, generate_kwargs=generate_kwargs)

    def model_key(self) -> dict[str, Any]:
        return _model_key(self.captioner)

    def caption(self, pixels: list[np.ndarray], setting: Setting, batch_size: int) -> tuple[Setting, list[str]]:
        return setting, self.captioner.caption(pixels, bit_width=setting[0], scheme=setting[1], batch_size=batch_size)


@contextlib.contextmanager
def ray_session(workers: int = 0, address: str | None = None) -> Iterator[Any]:
    """Ray, started here (a local instance with ``workers`` CPUs) or joined (``address``, else
    ``$RAY_ADDRESS`` if set), and shut
    down on every exit path, unless it was already initialised (then it is the caller's to keep).

    Sweeps inside the block share it (one start-up for several sweeps)::

        with sweep.ray_session(workers):          # workers=0 and no address: no Ray at all
            a = sweep.sweep(cap_a, ..., workers=workers)
            b = sweep.sweep(cap_b, ..., workers=workers)
    """
    address = address or os.environ.get("RAY_ADDRESS") or None  # Ray's convention (`ray job submit` sets it)
    if not workers and address is None:
        yield None
        return
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a pinned dependency
        raise ValueError("workers > 0 needs Ray: pip install 'ray>=2'") from None
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report (and no network) from a book
    temp = None
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if address is None:
        # Short path: Ray's unix sockets live under it (107-character limit).
        temp = tempfile.mkdtemp(prefix="qray-", dir="/tmp" if os.path.isdir("/tmp") else None)
        ray.init(num_cpus=workers, _temp_dir=temp, **common)
    else:
        ray.init(address=address, **common)
    try:
        yield ray
    finally:
        ray.shutdown()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _on_ray(spec: Mapping[str, Any], samples: Sequence[Sample], settings: list[Setting], kind: str, data_id: str,
            cache: Any, metrics: Sequence[str], progress: bool, batch_size: int,
            model_key: Mapping[str, Any] | None, workers: int, address: str | None, gpus_per_worker: float,
            threads: int, max_retries: int, on_result: Any) -> dict[Setting, dict[str, Any]]:
    """Settings are spread over ``workers`` actors; captions come back as each setting finishes and
    are scored here (one scorer, so scores equal the serial run's: CIDEr's document frequencies
    come from the references only, and every setting is captioned whole, never sharded)."""
    plan = _Plan(samples, settings, data_id, cache, metrics, batch_size, on_result)
    with ray_session(workers, address) as ray, _bar(settings, progress) as bar:
        # max_restarts: a dead worker process is restarted (model reloaded); max_task_retries:
        # the setting it was captioning is resubmitted to it.
        actor_cls = ray.remote(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=max_retries,
                               max_task_retries=max_retries)(_CaptionWorker)
        actors = [actor_cls.remote(spec["model"], spec["device"], spec["dtype"], spec["generate_kwargs"], threads)
                  for _ in range(workers)]
        try:
            failed = _dispatch(ray, actors, spec, plan, samples, settings, kind, batch_size, model_key, bar)
        finally:  # a session the caller keeps must not keep our actors (and their CPUs or GPUs)
            for actor in actors:
                ray.kill(actor, no_restart=True)
    if failed:
        raise SweepFailed({s: failed[s] for s in settings if s in failed}, plan.ordered())
    return plan.ordered()


def _dispatch(ray: Any, actors: list[Any], spec: Mapping[str, Any], plan: _Plan, samples: Sequence[Sample],
             settings: list[Setting], kind: str, batch_size: int, model_key: Mapping[str, Any] | None,
             bar: Any) -> dict[Setting, str]:
    """Hand the uncached settings to idle actors and finish each as it returns; the failures by setting."""
    try:
        reported = ray.get([a.model_key.remote() for a in actors])
    except ray.exceptions.RayError as exc:
        raise RuntimeError(f"the Ray workers could not load {spec['model']!r}: {_cause(exc)}") from None
    if spec.get("model_id"):  # the caller named the weights: the workers load them by name
        reported = [{**r, "model": spec["model_id"]} for r in reported]
    if any(r != reported[0] for r in reported) or (model_key is not None and reported[0] != _jsonable(model_key)):
        raise RuntimeError("the Ray workers run another model, dtype or code version than this process "
                           f"(workers: {reported[0]}, here: {model_key}); install the same qlib and "
                           "packages on every node")
    plan.set_model_key(reported[0])
    todo: collections.deque[Setting] = collections.deque()
    for s in settings:
        caps, scored = plan.cached_captions(s), None
        if caps is not None and (scored := plan.cached_scores(s)) is not None:
            plan.finish(s, caps, *scored)
            bar.update(1)
        elif caps is not None:
            plan.score({s: caps})
            bar.update(1)
        else:
            todo.append(s)
    failed: dict[Setting, str] = {}
    if todo:
        n_frames = spec.get("n_frames") or 4
        pixels = ray.put(load_pixels(samples, kind, n_frames))  # sent once per node, shared by its workers
        idle, inflight = list(actors), {}
        # A hand-written queue, not ray.util.ActorPool: ActorPool does not say which input a
        # failed result belonged to, and the failure must be reported per setting.
        while todo or inflight:
            while idle and todo:
                actor, s = idle.pop(), todo.popleft()
                inflight[actor.caption.remote(pixels, s, batch_size)] = (actor, s)
            ray.wait(list(inflight), num_returns=1)
            # Everything finished by now is scored in one tokenizer (JVM) call.
            done, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0)
            ready: dict[Setting, list[str]] = {}
            for ref in done:
                actor, s = inflight.pop(ref)
                try:
                    _, caps = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    failed[s] = _cause(exc)
                    if not isinstance(exc, ray.exceptions.RayActorError):
                        idle.append(actor)  # an error of this setting, the worker is fine
                    bar.update(1)
                    continue
                idle.append(actor)
                plan.put_captions(s, caps)
                ready[s] = caps
            if not idle and not inflight and todo:  # every worker is gone for good
                failed.update({t: "no Ray worker left (all died after their restarts)" for t in todo})
                bar.update(len(todo))
                todo.clear()
            plan.score(ready)
            bar.update(len(ready))
    return failed


def _cause(exc: BaseException) -> str:
    """The last line of a Ray error: the original exception, without Ray's banner."""
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


# ----------------------------------------------------------------------------------------- commands


def run_sweep(model: str | os.PathLike | None = None, data: str | os.PathLike = "shapes",
              settings: Iterable[Setting] = ((None, "uniform"),), *, n_samples: int | None = None,
              split: str | None = None, image_root: str | os.PathLike | None = None, device: str = "cpu",
              dtype: str = "float32", metrics: Sequence[str] = METRICS, cache: str | os.PathLike | None = "auto",
              batch_size: int = 50, workers: int = 0, address: str | None = None,
              gpus_per_worker: float | None = None,
              threads: int = 1, max_retries: int = 2, progress: bool = True,
              on_result: Callable[[Setting, dict[str, Any]], None] | None = None
              ) -> tuple[dict[Setting, dict[str, Any]], list[Sample]]:
    """Sweep ``settings`` of ``model`` on ``data`` by names: the ``python -m qlib.captioning sweep`` command.

    Parameters
    ----------
    model, data, n_samples, split, image_root, device, dtype, metrics
        As in :func:`evaluate`.
    settings : iterable of (bit_width or None, quantizer)
        E.g. ``parse_settings("2,8", "uniform,pot")``.
    workers : int
        0: serial, in this process. ``N >= 1``: on Ray; each of ``N`` actors loads the model once
        and takes settings from a queue; the driver (this process) scores and caches each setting
        as it comes back. Without ``address`` a local Ray of ``N`` worker processes is started
        (and shut down at the end).
    address : str, optional
        Join an existing Ray cluster (``"auto"`` or ``"ray://head:10001"``); every node needs
        qlib and the model (or hub access), as with ``ray job submit --working-dir .``.
    gpus_per_worker : float, optional
        GPUs Ray reserves for each actor (default: 1 with ``device="cuda"``, else 0).
    max_retries : int
        Restarts of a dead worker and retries of the setting it held; a setting that still
        fails raises :class:`SweepFailed` after every other setting is done and cached.

    Returns
    -------
    (dict, list of Sample)
        ``{setting: {"captions", "metrics", "samples"}}`` in the order of ``settings``, and the samples.
    """
    settings = _check_settings(settings)
    _check_metrics(metrics)
    gpus_per_worker = _check_workers(workers, gpus_per_worker, max_retries, device)
    samples, kind, data_id = load_samples(data, n_samples, split, image_root)
    if model is None:
        model = "tiny-git-video" if kind == "video" else "tiny-git"
    if not workers:
        captioner = load_captioner(model, device=device, dtype=dtype)
        return sweep(captioner, samples, settings, kind, data_id, cache, metrics, progress, batch_size,
                     on_result=on_result), samples
    from qlib.runtime import resolve_device

    if gpus_per_worker == 0:  # the driver may lack the GPU its workers have; check only what runs here
        resolve_device(device)
    n_frames = None
    if kind == "video":
        from transformers import AutoConfig

        path = CHECKPOINTS.get(str(model), pathlib.Path(str(model)).expanduser())
        config = AutoConfig.from_pretrained(path if path.is_dir() else str(model))
        n_frames = getattr(config, "num_image_with_embedding", None)
    spec = {"model": str(model), "device": device.split(":")[0], "dtype": dtype, "generate_kwargs": None,
            "n_frames": n_frames}
    return _on_ray(spec, samples, settings, kind, data_id, cache, metrics, progress, batch_size, None, workers,
                   address, gpus_per_worker, threads, max_retries, on_result), samples


def result_record(result: Mapping[str, Any], setting: Setting, samples: Sequence[Sample], model: Any,
                  data: Any) -> dict[str, Any]:
    """One setting as ``evaluate --json`` prints it: every metric, then ``n_samples``,
    ``bit_width``, ``quantizer``, ``model``, ``data`` and ``examples`` (three captions with references)."""
    out: dict[str, Any] = dict(result["metrics"])
    out.update({"n_samples": len(samples), "bit_width": setting[0],
                "quantizer": setting[1] if setting[0] is not None else None, "model": str(model), "data": str(data),
                "examples": [{"caption": c, "references": s.references}
                             for c, s in zip(result["captions"][:3], samples[:3])]})
    return out


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
    return result_record(result, setting, samples, model, data)
