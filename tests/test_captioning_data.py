"""Readers and generated data of qlib.captioning (paper Sec. VI-C)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qlib.captioning import data
from qlib.captioning.data import (generate_shapes, generate_shapes_video, load_frames, load_image, parse_caption,
                                  read_coco, read_vatex, sample_frame_indices, scene_accuracy)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    generate_shapes(out, 12, seed=3)
    return out


def test_coco_reader_reads_a_generated_file(shapes_dir):
    ann = json.loads((shapes_dir / "captions_test.json").read_text())
    samples = read_coco(shapes_dir / "captions_test.json")
    assert len(samples) == 12 == len(ann["images"])
    assert len(ann["annotations"]) == 60
    for s in samples:
        assert len(s.references) == 5 and len(set(s.references)) == 5  # differently worded
        assert s.path.exists() and load_image(s.path).shape == (64, 64, 3)
        assert s.scene is not None and 1 <= len(s.scene["objects"]) <= 2
    assert read_coco(shapes_dir / "captions_test.json", limit=4)[3].id == samples[3].id
    assert read_coco(shapes_dir / "captions_test.json", split="train") == []


def test_generation_is_seeded(tmp_path, shapes_dir):
    generate_shapes(tmp_path, 12, seed=3)
    a = read_coco(tmp_path / "captions_test.json")
    b = read_coco(shapes_dir / "captions_test.json")
    assert [s.references for s in a] == [s.references for s in b]
    assert np.array_equal(load_image(a[5].path), load_image(b[5].path))


def test_karpathy_format(tmp_path):
    (tmp_path / "val2014").mkdir()
    js = {"images": [{"filepath": "val2014", "filename": "x.jpg", "split": "test", "cocoid": 7,
                      "sentences": [{"raw": "A dog. "}, {"raw": "a cat"}]},
                     {"filepath": "val2014", "filename": "y.jpg", "split": "train", "cocoid": 8,
                      "sentences": [{"raw": "b"}]}]}
    (tmp_path / "dataset_coco.json").write_text(json.dumps(js))
    s = read_coco(tmp_path / "dataset_coco.json", split="test")
    assert len(s) == 1 and s[0].id == 7 and s[0].references == ["A dog.", "a cat"]
    assert s[0].path == tmp_path / "val2014" / "x.jpg"


def test_vatex_reader_and_uniform_frames(tmp_path):
    ann = generate_shapes_video(tmp_path, 3, seed=0, clip_frames=8)
    clips = read_vatex(ann, tmp_path / "test")
    assert len(clips) == 3 and all(len(c.references) == 5 for c in clips)
    assert list(sample_frame_indices(8, 4)) == [1, 3, 5, 7]
    assert list(sample_frame_indices(3, 4)) == [0, 1, 1, 2]
    frames = load_frames(clips[0].path, 4)
    full = np.load(clips[0].path)
    assert frames.shape == (4, 64, 64, 3) and np.array_equal(frames, full[[1, 3, 5, 7]])
    # The same clip as a folder of frame images.
    from PIL import Image

    d = tmp_path / "asframes"
    d.mkdir()
    for k, f in enumerate(full):
        Image.fromarray(f).save(d / f"{k:03d}.png")
    assert np.array_equal(load_frames(d, 4), frames)


def test_scene_accuracy_on_references_and_on_wrong_captions(shapes_dir):
    samples = read_coco(shapes_dir / "captions_test.json")
    scenes = [s.scene for s in samples for _ in range(5)]
    refs = [r for s in samples for r in s.references]
    assert scene_accuracy(refs, scenes) == {"scene": 1.0, "count": 1.0, "colour": 1.0, "shape": 1.0, "position": 1.0}
    truth = {"objects": [{"colour": "red", "shape": "circle", "size": "large", "position": "top left"}]}
    wrong_pos = scene_accuracy(["a large red circle in the bottom right"], [truth])
    assert wrong_pos["scene"] == 0.0 and wrong_pos["colour"] == 1.0 and wrong_pos["position"] == 0.0
    extra = scene_accuracy(["a red circle and a blue square"], [truth])
    assert extra["count"] == 0.0 and extra["colour"] == 0.5 and extra["scene"] == 0.0
    assert scene_accuracy(["a red circle"], [truth])["position"] is None  # nothing stated: no score, no NaN
    assert scene_accuracy(["a red circle"], [truth])["scene"] == 1.0


def test_parse_caption_relations_and_motion():
    f = parse_caption("a blue square to the left of a small red circle")
    assert [(o["colour"], o["shape"], o["size"]) for o in f["objects"]] == [("blue", "square", None),
                                                                           ("red", "circle", "small")]
    assert f["relation"] == "to the left of"
    m = parse_caption("a red circle moves from the top left to the top right")["motion"]
    assert m == {"direction": None, "start": "top left", "end": "top right"}


def test_bad_input_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="annotation_file"):
        read_coco(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="n_images"):
        generate_shapes(tmp_path, 0)
    with pytest.raises(ValueError, match="n_frames"):
        sample_frame_indices(8, 0)
    with pytest.raises(ValueError, match="kind"):
        data.shapes_dataset("audio")


def test_scene_checks_are_the_per_sample_counts_of_scene_accuracy():
    truth = [{"objects": [{"colour": "red", "shape": "circle", "size": "large", "position": "top left"}]},
             {"objects": [{"colour": "blue", "shape": "square", "size": "small", "position": "top right"},
                          {"colour": "red", "shape": "circle", "size": "large", "position": "bottom left"}]}]
    caps = ["a large red circle in the bottom right", "a blue square above a red circle"]
    rows = data.scene_checks(caps, truth)
    assert rows[0] == {"scene": 0, "count": 1, "objects": 1, "colour": 1, "shape": 1,
                       "position_stated": 1, "position_right": 0}
    assert rows[1]["scene"] == 1 and rows[1]["position_stated"] == 1 and rows[1]["objects"] == 2
    acc = scene_accuracy(caps, truth)
    assert acc["scene"] == 0.5 and acc["position"] == 0.5 and acc["colour"] == 1.0


@pytest.mark.parametrize("reader", [read_coco, read_vatex])
def test_malformed_json_names_the_file(tmp_path, reader):
    bad = tmp_path / "broken_annotations.json"
    bad.write_text('{"images": [1, 2,')
    with pytest.raises(ValueError, match="broken_annotations.json.*not valid JSON.*line 1"):
        reader(bad)


def test_missing_image_or_clip_is_one_clear_error(tmp_path):
    from qlib.captioning.data import load_frames, load_image

    with pytest.raises(ValueError, match="image root"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="video root"):
        load_frames(tmp_path / "nope.npy")
