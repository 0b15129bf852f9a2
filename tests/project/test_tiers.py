"""The tier machinery of tests/conftest.py bites: run on small inner suites in a child pytest (so
this file is itself in the slow tier) with the real conftest and pytest-timeout.

- a fast-tier test that starts Python (or anything installed in this environment) fails, naming
  itself; the same test marked slow runs; a system tool a library asks about the host runs;
- under RAYPAIR_STRICT=1 a skip fails, a gpu test without CUDA still skips; without it a skip skips;
- a test that hangs past the timeout fails with its name and traceback.
"""
from __future__ import annotations

import sys

import pytest

from helpers import ROOT

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow  # child pytest processes

INI = """[pytest]
addopts = --strict-markers -p no:cacheprovider
markers =
    slow: s
    ray: r
    soak: k
    gpu: g
timeout = 60
"""


@pytest.fixture
def inner(pytester, monkeypatch):
    monkeypatch.delenv("RAYPAIR_STRICT", raising=False)
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makeini(INI)

    def run(body: str, *args: str, strict: bool = False):
        if strict:
            monkeypatch.setenv("RAYPAIR_STRICT", "1")
        pytester.makepyfile(test_inner=body)
        return pytester.runpytest_subprocess("-rA", *args)

    return run


SPAWN = f"""
import subprocess, sys, pytest

def test_fast_spawns():
    subprocess.run([{sys.executable!r}, "-c", "pass"], check=True)

@pytest.mark.slow
def test_slow_spawns():
    subprocess.run([{sys.executable!r}, "-c", "pass"], check=True)

def test_fast_asks_the_host():
    assert subprocess.run(["uname", "-s"], capture_output=True, text=True).stdout.strip()

def test_fast_spawns_a_rank():
    import multiprocessing as mp
    mp.get_context("spawn").Process(target=print).start()
"""


def test_a_fast_test_that_starts_a_process_fails_and_names_itself(inner):
    res = inner(SPAWN)
    res.assert_outcomes(passed=2, failed=2)
    out = res.stdout.str()
    assert "FastTierError: test_inner.py::test_fast_spawns starts a process" in out
    assert "FastTierError: test_inner.py::test_fast_spawns_a_rank starts a process" in out
    assert "PASSED test_inner.py::test_slow_spawns" in out and "PASSED test_inner.py::test_fast_asks_the_host" in out


SKIPS = """
import pytest

def test_needs_data():
    pytest.skip("no dataset here")

@pytest.mark.gpu
@pytest.mark.skipif(True, reason="needs CUDA")
def test_needs_cuda():
    pass
"""


def test_a_skip_fails_under_strict_but_a_gpu_test_without_cuda_still_skips(inner):
    import torch

    if torch.cuda.is_available():  # the gpu exception only applies on a machine without CUDA
        pytest.fail("this check is written for a CPU machine")
    inner(SKIPS).assert_outcomes(skipped=2)
    strict = inner(SKIPS, strict=True)
    strict.assert_outcomes(failed=1, skipped=1)
    assert "skipped under RAYPAIR_STRICT=1" in strict.stdout.str() and "no dataset here" in strict.stdout.str()


def test_a_hang_fails_with_its_name(inner):
    # 3 s for this one test only: the others' hooks import torch (~3 s in a loaded process of its own)
    res = inner("import time, pytest\n\n@pytest.mark.timeout(3)\ndef test_hangs():\n    time.sleep(60)\n")
    res.assert_outcomes(failed=1)
    assert "Timeout" in res.stdout.str() and "test_hangs" in res.stdout.str()
