"""Captioning co-inference: data, split models, training, metrics and cached sweeps (paper Sec. VI-C).

- :mod:`qlib.captioning.data`     COCO-format and VaTeX-style readers; the generated shapes data
- :mod:`qlib.captioning.model`    split co-inference of GIT and BLIP-2 (agent = vision encoder)
- :mod:`qlib.captioning.train`    the training recipe of the CI-scale tiny GIT
- :mod:`qlib.captioning.metrics`  CIDEr-D, BLEU-4, METEOR, ROUGE-L with pycocoevalcap (no SPICE)
- :mod:`qlib.captioning.sweep`    evaluation over bit-widths and quantizers, cached on disk
- :mod:`qlib.captioning.budgets`  designs of :mod:`qlib.design` across budgets joined with the measured quality

Command line: ``python -m qlib.captioning evaluate|sweep|train`` (see ``--help``).
"""

from qlib.captioning.data import Sample, read_coco, read_vatex, scene_accuracy, shapes_dataset
from qlib.captioning.metrics import METRICS, evaluate_captions, evaluate_many
from qlib.captioning.model import SplitCaptioner, load_captioner

__all__ = [
    "Sample",
    "read_coco",
    "read_vatex",
    "scene_accuracy",
    "shapes_dataset",
    "METRICS",
    "evaluate_captions",
    "evaluate_many",
    "SplitCaptioner",
    "load_captioner",
]
