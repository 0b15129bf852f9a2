"""Wall and CPU time of ``raypair validate`` on the three kinds of file, each in a fresh process
(what a user waits for), after one untimed run per file that warms the data cache.

    RAYPAIR_DATA=../shared/data python benchmarks/validate_time.py [--repeats 5] [FILE ...]

Default files: a search space (search_spaces/omega.yaml), an ablation (ablations/p3_table1_c10.yaml)
and a run file (omega's ``run:`` section written to a temporary file), all on CIFAR-10, plus the
quickstart (digits). Prints, per file, the median wall and CPU (user + system) seconds of the
``python -m raypair validate FILE`` process, and whether it imported torch. To time another
checkout (e.g. the code before a change), put it first on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(path: Path, cwd: str) -> tuple[float, float]:
    """Wall and CPU seconds of one ``raypair validate`` process, started in ``cwd`` (not this
    checkout, so that PYTHONPATH decides which raypair runs)."""
    cpu0, t0 = _cpu(), time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "raypair", "validate", str(path.resolve())], capture_output=True,
                         text=True, cwd=cwd)
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    if out.returncode:
        raise SystemExit(f"validate {path} failed: {out.stderr.strip()}")
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_file = Path(tmp) / "run.yaml"
        space = yaml.safe_load((ROOT / "search_spaces" / "omega.yaml").read_text())
        run_file.write_text(yaml.safe_dump(space["run"] | {"name": "omega_run"}))
        files = args.files or [("search space", ROOT / "search_spaces" / "omega.yaml"),
                               ("ablation", ROOT / "ablations" / "p3_table1_c10.yaml"),
                               ("run file", run_file), ("search space (digits)", ROOT / "search_spaces" / "quickstart.yaml")]
        files = [f if isinstance(f, tuple) else ("file", f) for f in files]
        print(f"raypair from {os.environ.get('PYTHONPATH') or 'the installed package'}; load "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; median of {args.repeats}")
        print(f"{'kind':24} {'wall s':>7} {'cpu s':>7}  file")
        for kind, path in files:
            timed(path, tmp)  # warms the data cache
            runs = [timed(path, tmp) for _ in range(args.repeats)]
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"{kind:24} {wall:7.2f} {cpu:7.2f}  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}")


if __name__ == "__main__":
    main()
