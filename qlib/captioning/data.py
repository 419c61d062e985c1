"""Captioning data: COCO-format and VaTeX-style readers and the book's generated shapes data
(paper Sec. VI-C).

The paper evaluates on MS-COCO (Karpathy test split, five references per image) and VaTeX
(video clips, four frames sampled uniformly per clip). Neither can be fetched in CI, so the
book also generates a small but genuine captioning task: coloured shapes with sizes,
positions and relations (images), and single shapes moving between quadrants (video clips).
The generated sets are written in the *same* formats as the real ones (COCO-format JSON plus
PNG files; VaTeX-style JSON plus per-clip frame arrays), so one reader serves both scales.
Because the scenes are generated, every sample also carries its ground truth (``scene``),
which :func:`scene_accuracy` checks a caption against.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "Sample",
    "COLOURS",
    "SHAPES",
    "SIZES",
    "POSITIONS",
    "read_coco",
    "read_vatex",
    "load_image",
    "load_frames",
    "sample_frame_indices",
    "generate_shapes",
    "generate_shapes_video",
    "shapes_dataset",
    "parse_caption",
    "scene_accuracy",
    "scene_checks",
    "read_json",
    "cache_dir",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 210),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 6, "large": 11}  # half-extent in pixels on a 64 x 64 canvas
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
_CENTRES = {"top left": (16, 16), "top right": (48, 16), "bottom left": (16, 48), "bottom right": (48, 48)}
_IMAGE_SIZE = 64


@dataclass
class Sample:
    """One captioning sample: an image file (or a clip's frame source) and its references.

    Attributes
    ----------
    id : int or str
        Image id (COCO) or video id (VaTeX).
    path : pathlib.Path
        Image file, or the clip's frames (``.npy``/``.npz`` array, a folder of images, or a video file).
    references : list of str
        Human (or generated) reference captions.
    scene : dict or None
        Ground truth of a generated sample (``None`` for real data).
    """

    id: Any
    path: pathlib.Path
    references: list[str]
    scene: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- readers


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a malformed or unreadable file raises ``ValueError`` naming it.

    ``json.JSONDecodeError`` says where the text breaks but not which file it was reading,
    which is the first thing a reader with several annotation files needs to know.
    """
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                         f"expected a COCO-format or VaTeX-style annotation file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read annotation file {str(path)!r}: {exc}") from None



def read_coco(annotation_file: str | os.PathLike, image_root: str | os.PathLike | None = None,
              split: str | None = None, limit: int | None = None) -> list[Sample]:
    """Read captions in COCO format (or Karpathy's ``dataset_coco.json``).

    Parameters
    ----------
    annotation_file : path
        Either the COCO caption format (``{"images": [{"id", "file_name"}], "annotations":
        [{"image_id", "caption"}]}``, e.g. ``captions_val2014.json``) or Karpathy's split file
        (``{"images": [{"filepath", "filename", "split", "sentences": [{"raw"}]}]}``; the paper
        evaluates on its ``"test"`` split: 5,000 images).
    image_root : path, optional
        Folder the image file names are relative to (default: the annotation file's folder).
    split : str, optional
        Keep only images of this split (Karpathy format, or COCO files whose images carry ``"split"``).
    limit : int, optional
        Keep the first ``limit`` images (>= 1), in file order.

    Returns
    -------
    list of Sample
        One per image, references in file order.
    """
    path = pathlib.Path(annotation_file)
    if not path.is_file():
        raise ValueError(f"annotation_file {str(path)!r} does not exist (a COCO-format captions JSON)")
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be an integer >= 1 or None, got {limit!r}")
    root = pathlib.Path(image_root) if image_root is not None else path.parent
    data = read_json(path)
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"annotation_file {path.name!r} has no 'images' list: not COCO format")
    samples: list[Sample] = []
    if "annotations" in data:  # COCO caption format
        refs: dict[Any, list[str]] = {}
        for ann in data["annotations"]:
            refs.setdefault(ann["image_id"], []).append(ann["caption"].strip())
        for img in data["images"]:
            if split is not None and img.get("split") != split:
                continue
            samples.append(Sample(img["id"], root / img["file_name"], refs.get(img["id"], []),
                                  img.get("scene"), {k: v for k, v in img.items() if k not in ("scene",)}))
    else:  # Karpathy's dataset_coco.json
        for img in data["images"]:
            if split is not None and img.get("split") != split:
                continue
            rel = pathlib.Path(img.get("filepath", "")) / img["filename"]
            sid = img.get("cocoid", img.get("imgid", img["filename"]))
            samples.append(Sample(sid, root / rel, [s["raw"].strip() for s in img["sentences"]], None,
                                  {"split": img.get("split")}))
    if limit is not None:
        samples = samples[: int(limit)]
    return samples


def read_vatex(annotation_file: str | os.PathLike, video_root: str | os.PathLike | None = None,
               limit: int | None = None) -> list[Sample]:
    """Read VaTeX-style annotations: a JSON list of ``{"videoID", "enCap": [...]}``.

    The clip of ``videoID`` is looked up under ``video_root`` as ``<videoID>.npy``,
    ``<videoID>.npz``, a folder ``<videoID>/`` of frame images, or ``<videoID>.mp4``
    (decoding mp4 needs PyAV or OpenCV, which the book does not require).
    """
    path = pathlib.Path(annotation_file)
    if not path.is_file():
        raise ValueError(f"annotation_file {str(path)!r} does not exist (a VaTeX-style JSON list)")
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be an integer >= 1 or None, got {limit!r}")
    root = pathlib.Path(video_root) if video_root is not None else path.parent
    data = read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"annotation_file {path.name!r} is not a VaTeX-style list of clips")
    samples = []
    for clip in data:
        vid = clip["videoID"]
        candidates = [root / f"{vid}.npy", root / f"{vid}.npz", root / vid, root / f"{vid}.mp4"]
        found = next((c for c in candidates if c.exists()), candidates[0])
        samples.append(Sample(vid, found, [c.strip() for c in clip["enCap"]], clip.get("scene"), {}))
        if limit is not None and len(samples) >= limit:
            break
    return samples


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An RGB image as a ``(H, W, 3)`` uint8 array."""
    from PIL import Image

    if not pathlib.Path(path).is_file():  # a wrong --image-root: one sentence, not a PIL traceback
        raise ValueError(f"no image file at {str(path)!r}: check the image root (--image-root)")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def sample_frame_indices(n_total: int, n_frames: int) -> np.ndarray:
    """Indices of ``n_frames`` frames spread uniformly over a clip of ``n_total`` (paper: 4 per clip).

    The clip is cut into ``n_frames`` equal segments and the middle frame of each is taken.
    """
    if n_total < 1:
        raise ValueError(f"n_total must be >= 1 frame, got {n_total}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    edges = np.linspace(0, n_total, n_frames + 1)
    return np.minimum(((edges[:-1] + edges[1:]) / 2).astype(int), n_total - 1)


def load_frames(path: str | os.PathLike, n_frames: int = 4) -> np.ndarray:
    """``n_frames`` frames sampled uniformly from a clip, as ``(n_frames, H, W, 3)`` uint8."""
    p = pathlib.Path(path)
    if not p.exists():  # a wrong --image-root: one sentence, not numpy's FileNotFoundError
        raise ValueError(f"no clip found at {str(p)!r} (.npy, .npz, a folder of frames or a video file): "
                         "check the video root (--image-root)")
    if p.suffix == ".npy":
        frames = np.load(p)
    elif p.suffix == ".npz":
        with np.load(p) as z:
            frames = z[z.files[0]]
    elif p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
        idx = sample_frame_indices(len(files), n_frames)
        return np.stack([load_image(files[i]) for i in idx])
    else:
        try:
            import av  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ValueError(f"decoding {p.suffix} clips needs PyAV (`pip install av`); or pass frame "
                             "arrays (.npy) or folders of frame images") from exc
        with av.open(str(p)) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    idx = sample_frame_indices(len(frames), n_frames)
    return np.asarray(frames[idx], dtype=np.uint8)


# ----------------------------------------------------------------------------- generated scenes


def _draw(canvas: Any, shape: str, colour: str, size: str, cx: float, cy: float) -> None:
    r = SIZES[size]
    fill = COLOURS[colour]
    if shape == "circle":
        canvas.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        canvas.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        canvas.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


def _render(objects: Sequence[dict[str, Any]], rng: np.random.Generator,
            centres: Sequence[tuple[float, float]]) -> np.ndarray:
    from PIL import Image, ImageDraw

    noise = rng.normal(40, 8, size=(_IMAGE_SIZE, _IMAGE_SIZE, 3))
    im = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
    canvas = ImageDraw.Draw(im)
    for obj, (cx, cy) in zip(objects, centres):
        _draw(canvas, obj["shape"], obj["colour"], obj["size"], cx, cy)
    return np.asarray(im)


def _random_object(rng: np.random.Generator, position: str) -> dict[str, Any]:
    return {"colour": str(rng.choice(list(COLOURS))), "shape": str(rng.choice(SHAPES)),
            "size": str(rng.choice(list(SIZES))), "position": position}


def _relation(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, str]:
    """Relation of ``a`` to ``b`` (``a`` is left of or above ``b``) and its inverse."""
    if a["position"].split()[1] != b["position"].split()[1]:
        return "to the left of", "to the right of"
    return "above", "below"


def _image_captions(objects: list[dict[str, Any]]) -> list[str]:
    if len(objects) == 1:
        o = objects[0]
        s, c, h, p = o["size"], o["colour"], o["shape"], o["position"]
        return [f"a {s} {c} {h} in the {p}",
                f"there is a {s} {c} {h} in the {p} of the image",
                f"a {c} {h} in the {p}",
                f"the {p} shows a {s} {c} {h}",
                f"one {s} {c} {h} on a dark background"]
    a, b = objects
    rel, inv = _relation(a, b)
    return [f"a {a['size']} {a['colour']} {a['shape']} and a {b['size']} {b['colour']} {b['shape']}",
            f"a {a['colour']} {a['shape']} {rel} a {b['colour']} {b['shape']}",
            f"a {a['colour']} {a['shape']} in the {a['position']} and a {b['colour']} {b['shape']} "
            f"in the {b['position']}",
            f"two shapes a {a['colour']} {a['shape']} and a {b['colour']} {b['shape']}",
            f"a {b['colour']} {b['shape']} {inv} a {a['colour']} {a['shape']}"]


def _order(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Left before right, then top before bottom: the first-named object is the left (or upper) one.
    return sorted(objects, key=lambda o: (o["position"].split()[1] != "left", o["position"].split()[0] != "top"))


def _scene(rng: np.random.Generator) -> dict[str, Any]:
    n = 1 if rng.random() < 0.5 else 2
    quads = rng.choice(len(POSITIONS), size=n, replace=False)
    return {"objects": _order([_random_object(rng, POSITIONS[q]) for q in quads])}


def _jitter(rng: np.random.Generator, position: str) -> tuple[float, float]:
    cx, cy = _CENTRES[position]
    return cx + float(rng.integers(-3, 4)), cy + float(rng.integers(-3, 4))


def _atomic_dir(target: pathlib.Path, build: Any) -> pathlib.Path:
    """Build a folder in a temporary sibling and rename it into place (no half-written data set)."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def cache_dir() -> pathlib.Path:
    """Where generated data and sweep caches live: ``$QBOOK_CACHE`` or ``~/.cache/qbook``."""
    return pathlib.Path(os.environ.get("QBOOK_CACHE", pathlib.Path.home() / ".cache" / "qbook"))


def generate_shapes(out_dir: str | os.PathLike, n_images: int, seed: int = 0, split: str = "test") -> pathlib.Path:
    """Write ``n_images`` generated shape scenes as PNGs plus ``captions_<split>.json`` (COCO format).

    Each image (64 x 64) holds one or two shapes (5 colours, 3 shapes, 2 sizes, 4 quadrant
    positions, a few pixels of jitter, a noisy background) and five differently worded
    reference captions; its ``scene`` entry records the ground truth.

    Returns
    -------
    pathlib.Path
        The annotation file.
    """
    if not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ValueError(f"n_images must be an integer >= 1, got {n_images!r}")
    from PIL import Image

    out = pathlib.Path(out_dir)
    (out / split).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(int(n_images)):
        scene = _scene(rng)
        pixels = _render(scene["objects"], rng, [_jitter(rng, o["position"]) for o in scene["objects"]])
        name = f"{split}/{i:06d}.png"
        Image.fromarray(pixels).save(out / name)
        images.append({"id": i, "file_name": name, "split": split, "scene": scene})
        for cap in _image_captions(scene["objects"]):
            anns.append({"id": len(anns), "image_id": i, "caption": cap})
    ann_file = out / f"captions_{split}.json"
    ann_file.write_text(json.dumps({"info": {"description": "qbook generated shapes", "seed": seed},
                                    "images": images, "annotations": anns}))
    return ann_file


_MOVES = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}


def _video_captions(o: dict[str, Any], start: str, end: str, direction: str) -> list[str]:
    s, c, h = o["size"], o["colour"], o["shape"]
    return [f"a {s} {c} {h} moves from the {start} to the {end}",
            f"a {c} {h} moving {direction}",
            f"the {c} {h} slides {direction}",
            f"a {s} {c} {h} travels {direction} from the {start}",
            f"a {c} {h} goes from the {start} to the {end}"]


def generate_shapes_video(out_dir: str | os.PathLike, n_clips: int, seed: int = 0, split: str = "test",
                          clip_frames: int = 8) -> pathlib.Path:
    """Write ``n_clips`` generated clips (one shape moving to the neighbouring quadrant) in VaTeX style.

    Each clip is a ``(clip_frames, 64, 64, 3)`` uint8 array ``<videoID>.npy``; readers sample
    four frames uniformly, as the paper does for VaTeX. Returns the annotation file
    ``vatex_<split>.json``.
    """
    if not isinstance(n_clips, (int, np.integer)) or n_clips < 1:
        raise ValueError(f"n_clips must be an integer >= 1, got {n_clips!r}")
    if clip_frames < 2:
        raise ValueError(f"clip_frames must be >= 2, got {clip_frames}")
    out = pathlib.Path(out_dir)
    (out / split).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(int(n_clips)):
        start = POSITIONS[int(rng.integers(len(POSITIONS)))]
        row, col = start.split()
        options = (["right"] if col == "left" else ["left"]) + (["down"] if row == "top" else ["up"])
        direction = str(rng.choice(options))
        if direction in ("left", "right"):
            end = f"{row} {'right' if direction == 'right' else 'left'}"
        else:
            end = f"{'bottom' if direction == 'down' else 'top'} {col}"
        obj = _random_object(rng, start)
        (x0, y0), (x1, y1) = _jitter(rng, start), _jitter(rng, end)
        frames = []
        for t in np.linspace(0.0, 1.0, clip_frames):
            centre = (x0 + t * (x1 - x0), y0 + t * (y1 - y0))
            frames.append(_render([obj], rng, [centre]))
        vid = f"{split}_{i:06d}"
        np.save(out / split / f"{vid}.npy", np.stack(frames))
        scene = {"objects": [obj], "motion": {"start": start, "end": end, "direction": direction}}
        clips.append({"videoID": vid, "enCap": _video_captions(obj, start, end, direction), "scene": scene})
    ann_file = out / f"vatex_{split}.json"
    ann_file.write_text(json.dumps(clips))
    return ann_file


def shapes_dataset(kind: str = "image", split: str = "test", n: int | None = None, root: str | os.PathLike | None = None,
                   seed: int | None = None) -> list[Sample]:
    """The book's generated data set, written once to ``root`` (default :func:`cache_dir`) and read back.

    Parameters
    ----------
    kind : {"image", "video"}
        Shapes images (COCO format) or moving-shape clips (VaTeX style).
    split : {"train", "test"}
        4,000 training and 200 test samples, from different seeds.
    n : int, optional
        Keep the first ``n`` samples.
    """
    if kind not in ("image", "video"):
        raise ValueError(f"kind must be 'image' or 'video', got {kind!r}")
    sizes = {"train": 4000, "test": 200}
    if split not in sizes:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    seed = {"train": 1, "test": 2}[split] if seed is None else seed
    base = pathlib.Path(root) if root is not None else cache_dir() / "captioning"
    target = base / f"shapes-{kind}-v1-{split}-seed{seed}"
    if kind == "image":
        _atomic_dir(target, lambda d: generate_shapes(d, sizes[split], seed=seed, split=split))
        return read_coco(target / f"captions_{split}.json", limit=n)
    _atomic_dir(target, lambda d: generate_shapes_video(d, sizes[split], seed=seed, split=split))
    return read_vatex(target / f"vatex_{split}.json", target / split, limit=n)


# ----------------------------------------------------------------------------- ground-truth check

_COLOUR_RE = "|".join(COLOURS)
_SHAPE_RE = "|".join(SHAPES)
_POS_RE = "|".join(POSITIONS)
_MENTION = re.compile(rf"(?:\b(small|large) )?\b({_COLOUR_RE}) ({_SHAPE_RE})\b")
_REL = re.compile(r"(to the left of|to the right of|above|below)")


def parse_caption(caption: str) -> dict[str, Any]:
    """Extract the facts a caption states: objects (colour, shape, size?, position?), a relation,
    and, for clips, a motion (direction, start, end).

    Works on the vocabulary of the generated data; captions of real data give empty facts.
    """
    text = " ".join(caption.lower().split())
    objects = []
    mentions = list(_MENTION.finditer(text))
    for k, m in enumerate(mentions):
        after = text[m.end(): mentions[k + 1].start() if k + 1 < len(mentions) else len(text)]
        before = text[: m.start()]
        pos = re.match(rf" (?:in|at) the ({_POS_RE})\b", after)
        if pos is None and k == 0:
            pos = re.match(rf"^the ({_POS_RE}) shows\b", before)
        objects.append({"colour": m.group(2), "shape": m.group(3), "size": m.group(1),
                        "position": pos.group(1) if pos else None})
    relation = None
    if len(mentions) == 2:
        rel = _REL.search(text[mentions[0].end(): mentions[1].start()])
        relation = rel.group(1) if rel else None
    motion: dict[str, str | None] = {}
    d = re.search(r"\b(?:moving|slides|travels) (left|right|up|down)\b", text)
    fr = re.search(rf"\bfrom the ({_POS_RE})\b", text)
    to = re.search(rf"\bto the ({_POS_RE})\b", text)
    if d or fr or to:
        motion = {"direction": d.group(1) if d else None, "start": fr.group(1) if fr else None,
                  "end": to.group(1) if to else None}
    return {"objects": objects, "relation": relation, "motion": motion}


def _check_relation(rel: str, a: dict[str, Any], b: dict[str, Any]) -> bool:
    (ra, ca), (rb, cb) = a["position"].split(), b["position"].split()
    return {"to the left of": ca == "left" and cb == "right", "to the right of": ca == "right" and cb == "left",
            "above": ra == "top" and rb == "bottom", "below": ra == "bottom" and rb == "top"}[rel]


def scene_checks(captions: Iterable[str], scenes: Iterable[dict[str, Any]]) -> list[dict[str, int]]:
    """Per caption, the counts :func:`scene_accuracy` sums: what it states and what is right.

    For each caption the stated objects are matched to the true ones by (colour, shape).

    Returns
    -------
    list of dict
        One per caption with integer fields ``scene`` (1 if the caption names exactly the true
        objects with every stated size, position, relation and motion correct), ``count`` (1 if
        it names as many objects as there are), ``colour`` and ``shape`` (matched colours and
        shapes), ``objects`` (the larger of the true and the stated object counts, the
        denominator of both), ``position_stated`` and ``position_right`` (positional facts:
        positions, relations, motion). Per-sample values are what a bootstrap over samples
        resamples (:mod:`qlib.captioning.metrics`).
    """
    out = []
    for caption, scene in zip(captions, scenes):
        facts = parse_caption(caption)
        truth = list(scene["objects"])
        pred = facts["objects"]
        tc = [o["colour"] for o in truth]
        ts = [o["shape"] for o in truth]
        row = {"scene": 0, "count": int(len(pred) == len(truth)), "objects": max(len(truth), len(pred)),
               "colour": sum(min(tc.count(c), [p["colour"] for p in pred].count(c)) for c in set(tc)),
               "shape": sum(min(ts.count(s), [p["shape"] for p in pred].count(s)) for s in set(ts)),
               "position_stated": 0, "position_right": 0}
        # Match by (colour, shape) to check the stated details of each object.
        remaining = list(truth)
        all_right = len(pred) == len(truth)
        matched = []
        for p in pred:
            hit = next((t for t in remaining if t["colour"] == p["colour"] and t["shape"] == p["shape"]), None)
            if hit is None:
                all_right = False
                matched.append(None)
                continue
            remaining.remove(hit)
            matched.append(hit)
            if p["size"] is not None and p["size"] != hit["size"]:
                all_right = False
            if p["position"] is not None:
                row["position_stated"] += 1
                ok = p["position"] == hit["position"]
                row["position_right"] += ok
                all_right &= ok
        if facts["relation"] is not None and len(matched) == 2 and None not in matched:
            row["position_stated"] += 1
            # Any pair of distinct true objects with the named looks may satisfy it (twins are ambiguous).
            ok = any(_check_relation(facts["relation"], t1, t2)
                     for i1, t1 in enumerate(truth) for i2, t2 in enumerate(truth)
                     if i1 != i2 and (t1["colour"], t1["shape"]) == (pred[0]["colour"], pred[0]["shape"])
                     and (t2["colour"], t2["shape"]) == (pred[1]["colour"], pred[1]["shape"]))
            row["position_right"] += ok
            all_right &= ok
        truth_motion = scene.get("motion")
        if truth_motion:
            for key in ("direction", "start", "end"):
                stated = facts["motion"].get(key)
                if stated is not None:
                    row["position_stated"] += 1
                    row["position_right"] += stated == truth_motion[key]
                    all_right &= stated == truth_motion[key]
            if not any(facts["motion"].values()):
                all_right = False  # a clip caption must say how the shape moves
        row["scene"] = int(bool(all_right))
        row["position_right"] = int(row["position_right"])
        out.append(row)
    return out


def scene_accuracy(captions: Iterable[str], scenes: Iterable[dict[str, Any]]) -> dict[str, float | None]:
    """How much of each generated scene a caption gets right (the data's ground truth is known).

    The sums of :func:`scene_checks` over captions.

    Returns
    -------
    dict
        ``scene``: the scene accuracy, the fraction of captions naming exactly the true objects
        (count, colours, shapes) with every stated size, position, relation and motion correct;
        ``count``: fraction of captions naming the right number of objects; ``colour``,
        ``shape``: matched colours / shapes per object (extra or missing objects count as
        wrong); ``position``: fraction of stated positional facts (positions, relations,
        motion) that are correct (``None`` if no caption states one: there is nothing to score,
        and a NaN would leak into JSON outputs).
    """
    rows = scene_checks(captions, scenes)
    if not rows:
        raise ValueError("captions and scenes must be non-empty")
    tot = {k: sum(r[k] for r in rows) for k in rows[0]}
    n = len(rows)
    return {"scene": tot["scene"] / n, "count": tot["count"] / n, "colour": tot["colour"] / tot["objects"],
            "shape": tot["shape"] / tot["objects"],
            "position": tot["position_right"] / tot["position_stated"] if tot["position_stated"] else None}
