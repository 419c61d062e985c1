import random

import numpy as np
import pytest
import torch

import qlib
from qlib import notation
from qlib.notebook import METRICS_MIME, read_metrics, record
from qlib.runtime import check_java, resolve_device, seed_everything, setup


def test_setup_pins_threads_and_seeds():
    info = setup(seed=3, threads=1)
    assert torch.get_num_threads() == 1
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    setup(seed=3, threads=1)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b
    assert info.seed == 3 and info.device == "cpu" and "torch" in str(info)


@pytest.mark.parametrize("bad", [{"threads": 0}, {"threads": 1.5}, {"seed": -1}, {"device": "tpu"}])
def test_setup_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        setup(**bad)


def test_cuda_request_without_gpu_says_what_to_pass():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="device='cpu'"):
        resolve_device("cuda")


def test_seed_everything_rejects_non_integers():
    with pytest.raises(ValueError, match="seed"):
        seed_everything("0")


def test_java_is_found_or_explained(monkeypatch):
    assert check_java()  # Java is a documented prerequisite of the test command
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(RuntimeError, match="install"):
        check_java()


def test_version_is_exposed():
    assert qlib.__version__.count(".") == 2


def test_notation_table_has_every_system_symbol_once():
    names = [s.name for s in notation.SYMBOLS]
    assert len(names) == len(set(names))
    for required in ["bit_width", "f_agent", "f_server", "n_flop_agent", "n_flop_server", "lam", "T0", "E0"]:
        assert required in names
    table = notation.symbol_table()
    assert table.count("\n") == len(names) + 1
    assert "f_agent" in notation.symbol_table(markdown=False)


def test_record_round_trips_through_a_notebook_node(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    out = record(cider=np.float64(1.25), n=3, name="x")
    assert out == {"cider": 1.25, "n": 3, "name": "x"}
    cell = {"outputs": [{"output_type": "display_data", "data": shown[0]}]}
    node = type("NB", (), {"cells": [cell]})()
    assert read_metrics(node) == out
    assert METRICS_MIME in shown[0] and "cider" in shown[0]["text/plain"]


def test_record_refuses_nan(monkeypatch):
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: None)
    with pytest.raises(ValueError, match="finite"):
        record(x=float("nan"))


def test_draw_system_returns_axes():
    import matplotlib

    matplotlib.use("agg")
    from qlib.figures import draw_system

    ax = draw_system()
    assert len(ax.texts) > 10


def test_setup_does_not_import_inductor_unless_determinism_is_asked_for():
    # Issue 14.4: torch.use_deterministic_algorithms imports torch._inductor (about a second);
    # chapters on the CPU never need it. Fresh interpreters: the test process may have it already.
    import subprocess
    import sys

    code = ("import sys, qlib; qlib.setup(seed=0, threads=1); import torch; "
            "print('torch._inductor' in sys.modules, torch.are_deterministic_algorithms_enabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    code = code.replace("threads=1)", "threads=1, deterministic=True)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_setup_rejects_a_non_boolean_deterministic():
    with pytest.raises(ValueError, match="deterministic"):
        setup(deterministic="yes")
