"""Sweeps on Ray (issue 17): same answers as the serial run, a killed worker is retried, a setting
that keeps failing is reported, and a driver killed with SIGKILL resumes where it stopped.

The only test module that imports Ray: its start-up (seconds on a quiet machine) is paid once
here, by the module-scoped session, and by the one command-line test that needs its own driver.
Sizes are the smallest that still run several settings on two workers.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from qlib.captioning import sweep as sw
from tests.helpers import ROOT
from tests.helpers import same_sweep as _same

ray = pytest.importorskip("ray")

SETTINGS = sw.parse_settings("2,8", "uniform,pot")
N = 12
KW = {"n_samples": N, "metrics": ["CIDEr"], "progress": False}


@pytest.fixture(scope="module")
def session():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    temp = tempfile.mkdtemp(prefix="qray-")
    if os.environ.get("RAY_ADDRESS"):  # a running Ray (as the sweep itself would join)
        ray.init(log_to_driver=False, logging_level="ERROR")
    else:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    results, _ = sw.run_sweep("tiny-git", "shapes", SETTINGS, cache=None, **KW)
    return results




def _kill_workers_once(killed):
    """An on_result callback: at the first finished setting, SIGKILL every caption worker of this
    user (only the sweep under test runs them), so the settings they hold are in flight."""
    import psutil

    def kill(setting, result):
        if killed:
            return
        for proc in psutil.process_iter():
            try:
                if proc.uids().real == os.getuid() and proc.cmdline() and \
                        proc.cmdline()[0].startswith("ray::_CaptionWorker"):
                    proc.kill()
                    killed.append(proc.pid)
            except psutil.Error:
                pass
        assert killed, "no caption worker found to kill"

    return kill


def test_two_workers_give_the_serial_results(session, serial, tmp_path):
    done = []
    results, _ = sw.run_sweep("tiny-git", "shapes", SETTINGS, cache=tmp_path, workers=2,
                              on_result=lambda s, r: done.append(s), **KW)
    assert list(results) == SETTINGS and sorted(done, key=str) == sorted(SETTINGS, key=str)
    assert _same(results, serial)  # captions and scores, setting by setting


def test_a_killed_worker_is_retried_and_a_setting_that_keeps_failing_is_reported(session, serial, tmp_path):
    killed: list[int] = []
    results, _ = sw.run_sweep("tiny-git", "shapes", SETTINGS, cache=tmp_path / "a", workers=2, max_retries=2,
                              on_result=_kill_workers_once(killed), **KW)
    assert killed and _same(results, serial)  # restarted, retried, nothing lost

    killed.clear()
    with pytest.raises(sw.SweepFailed) as info:  # no retries: the settings the workers held fail
        sw.run_sweep("tiny-git", "shapes", SETTINGS, cache=tmp_path / "b", workers=2, max_retries=0,
                     on_result=_kill_workers_once(killed), **KW)
    failed, finished = info.value.failed, info.value.results
    assert killed and failed and set(failed) | set(finished) == set(SETTINGS) and "failed" in str(info.value)
    assert _same(finished, {s: serial[s] for s in finished})
    again, _ = sw.run_sweep("tiny-git", "shapes", SETTINGS, cache=tmp_path / "b", workers=2, **KW)
    assert _same(again, serial)


def test_the_driver_killed_with_sigkill_resumes_only_the_missing_settings(tmp_path):
    args = [sys.executable, "-m", "qlib.captioning", "sweep", "--bit-widths", "2,8", "--quantizers",
            "uniform,pot", "--n-samples", str(N), "--metrics", "CIDEr", "--json", "--workers", "2",
            "--no-progress", "--cache", str(tmp_path / "cache")]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    temp_before = set(pathlib.Path("/tmp").glob("qray-*"))
    driver = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              start_new_session=True)
    try:
        first = driver.stdout.readline()
        os.kill(driver.pid, signal.SIGKILL)  # as a reader's Ctrl-\ or an OOM killer would
        driver.wait(timeout=60)
    finally:
        try:  # Ray's own processes of that driver, if any outlived it (they are in its process group)
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert first.startswith("{"), "the driver printed no result before it was killed"
    cache = tmp_path / "cache"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cache.glob("*.json")}
    finished = len([n for n in before if n.startswith("metrics-")])
    assert 1 <= finished < len(SETTINGS), f"{finished} settings were done at the kill: nothing to resume"

    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(ln) for ln in out.stdout.splitlines()]
    assert [(r["bit_width"], r["quantizer"]) for r in lines] == SETTINGS and json.loads(first) == lines[0]
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cache.glob("*.json")}
    assert all(after[name] == stamp for name, stamp in before.items())  # finished entries not redone
    assert len([n for n in after if n.startswith("metrics-")]) == len(SETTINGS)
    for left in set(pathlib.Path("/tmp").glob("qray-*")) - temp_before:  # the killed driver's Ray logs
        shutil.rmtree(left, ignore_errors=True)
