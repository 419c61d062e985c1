"""qlib: the helper package of qbook.

qbook reproduces and extends *Quantization-Aware Collaborative Inference for Large
Embodied AI Models* (Lyu, Xiao, Skoglund, Debbah, Poor, 2026). The notebooks teach;
this package does the work, one small module per topic:

- :mod:`qlib.runtime`   seeds, threads and environment checks every notebook calls first
- :mod:`qlib.notation`  the symbols of paper Sec. II with units and defaults (Sec. VI-C)
- :mod:`qlib.figures`   drawings shared by chapters (the system of Fig. 1)
- :mod:`qlib.notebook`  recording a chapter's headline metrics for the regression tests

Chapters add their own modules (``system``, ``costs``, ``weights``, ``quantize``,
``distortion``, ``rd``, ``design``, ``captioning``).
"""

from qlib.runtime import setup

__version__ = "0.1.0"

__all__ = ["__version__", "setup"]
