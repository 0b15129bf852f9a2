"""``benchmarks/gpu.py --device cpu --quick`` runs the device benchmark's code paths on the CPU, with
Ray, MLflow and Optuna made unimportable (a bare GPU machine has none of them), and prints every
row of its table with a number. No timing threshold is checked here: the ratios are the script's
output, not this test's.
"""
from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

pytestmark = pytest.mark.slow  # subprocesses: the benchmark script itself

SCRIPT = ROOT / "benchmarks" / "gpu.py"
BLOCKED = ("ray", "mlflow", "optuna")
BLOCKER = f'''import sys


class _Blocked:
    """Refuses {BLOCKED} and their submodules: the GPU benchmark must not need them."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is blocked: benchmarks/gpu.py runs without Ray, MLflow and Optuna")
        return None


sys.meta_path.insert(0, _Blocked())
'''


def blocked_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), PYTHONUNBUFFERED="1")
    env.pop("OUT", None)
    return env


def data_root(tmp_path: Path) -> str:
    """The shared CIFAR-10 if it is here, else a small CIFAR-10-shaped Parquet of random PNGs."""
    shared = os.environ.get("RAYPAIR_DATA")
    if shared and (Path(shared) / "cifar10" / "train.parquet").exists():
        return shared
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from torchvision.io import encode_png

    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 400), ("test", 200)):
        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        labels = [i % 10 for i in range(n)]
        img = pa.array([{"bytes": encode_png(x[i]).numpy().tobytes(), "path": f"c{labels[i]}/{i}.png"}
                        for i in range(n)])
        pq.write_table(pa.table({"img": img, "label": pa.array(labels)}), folder / f"{split}.parquet")
    return str(tmp_path / "data")


def rows_of(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6 and cells[0] not in ("row", "---"):
            rows[cells[0]] = cells
    return rows


def test_the_blocker_blocks(tmp_path):
    """The guard below is real: with it, importing any of the three fails."""
    for name in BLOCKED:
        out = subprocess.run([sys.executable, "-c", f"import {name}"], env=blocked_env(tmp_path),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode != 0 and "is blocked" in out.stderr, (name, out.stderr[-500:])


def test_quick_cpu_run_prints_every_row(tmp_path):
    from raypair.methods import METHODS

    out_file = tmp_path / "table.md"
    run = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--data", data_root(tmp_path),
                          "--out", str(out_file)], env=blocked_env(tmp_path), capture_output=True, text=True,
                         timeout=1500, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = rows_of(run.stdout)
    methods = METHODS.names()
    want = ([f"a.{m}" for m in methods]
            + [f"b.{b}.{k}" for b in (64, 16) for k in ("eager", "compiled")] + ["b.16.graphs", "b.16.plain_graphs"]
            + [f"c.{m}" for m in methods] + ["d.pair_training", "d.vpl", "e.1", "e.2", "e.4", "f.1", "f.4"]
            + ["g.stream", "g.step", "g.feed"])
    assert sorted(rows) == sorted(want), (sorted(set(rows) ^ set(want)), run.stdout[-3000:])
    for rid, (_, figure, value, target, ok, detail) in rows.items():
        assert math.isfinite(float(value)), (rid, value, detail)
        assert (target, ok) == ("—", "—") or ok in ("pass", "FAIL"), (rid, target, ok)
    assert rows["b.64.eager"][3] == "≤ 1.1" and rows["e.4"][3] == "≥ 2.5" and rows["d.vpl"][3] == "≤ 0.9"
    # (a) compares the CPU with itself here; the replayed draws make the two runs equal
    assert all(float(rows[f"a.{m}"][2]) == 0.0 for m in methods), {m: rows[f"a.{m}"] for m in methods}
    assert "wall time:" in run.stdout and out_file.read_text().strip() in run.stdout


def test_random_tape_replays_another_streams_draws():
    """(a)'s replay: draws recorded from one generator overwrite another generator's in the same order."""
    import torch

    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = mod  # its dataclass looks its module up
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules["gpu_bench"]

    def draws(seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [torch.rand(5, generator=g), torch.randperm(7, generator=g),
                torch.empty(4).uniform_(generator=g), torch._sample_dirichlet(torch.ones(3, 2), generator=g)]

    with mod.random_tape() as rec:
        a = draws(0)
    with mod.random_tape(rec.tape):
        b = draws(1)
    assert len(rec.tape) == 4 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(draws(0)[0], draws(1)[0])
    with pytest.raises(RuntimeError, match="random draw 0 differs"), mod.random_tape(rec.tape):
        torch.randperm(7)


def test_bad_device_and_data_fail_in_one_line(tmp_path):
    env = blocked_env(tmp_path)
    bad = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--data", str(tmp_path / "none")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--data" in bad.stderr, bad.stderr
    import torch

    if torch.cuda.is_available():
        return
    no_cuda = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda", "--data", data_root(tmp_path)],
                             env=env, capture_output=True, text=True, timeout=300)
    assert no_cuda.returncode == 2 and no_cuda.stderr.count("\n") == 1, no_cuda.stderr
    assert "CUDA is not available" in no_cuda.stderr
