"""The stream path's host cost, on generated JPEGs, in one run:

    python benchmarks/stream.py                       # 600 JPEGs of 400x350 px, 2 cores, + the memory rows
    python benchmarks/stream.py --side 800 --no-memory --ray
    python benchmarks/stream.py --no-memory --max-size 256   # + the row on images prepared at 256 px
    python benchmarks/stream.py --repeats 1 --max-size 0 --train  # the memory rows under 2-worker Ray Train

(a) images per second per CPU core of decode + RandomResizedCrop(224) + flip, uint8 batches of 64:
raypair's stream path (``StreamLoader``'s decoding processes over ``_Batches``: PIL with reduced-size
JPEG decoding, the box resized by torch's uint8 antialiased kernel) against a plain torchvision
``ImageFolder`` + ``DataLoader`` (PIL, ``RandomResizedCrop`` + ``RandomHorizontalFlip`` +
``PILToTensor``), the same files and the same number of worker processes (``--cores``), alternated
``--repeats`` times (median); ``--max-size N``: raypair's stream path once more on the same images
stored as ``raypair data prepare --max-size N`` stores them (shorter side N, by prepare's own
encoder), the issue's "prepared maximum resolution"; ``--ray``: Ray Data ``read_images`` + ``map`` (crop, flip) on the same
files, a local Ray of ``--cores`` CPUs, the second pass timed. Two figures per row: images per
second of wall time divided by the cores, and images per CPU-second (user + system time of this
process and every process below it, from ``/proc`` every 20 ms: :class:`CpuMeter`), which a shared
machine's load does not skew.
(b) host memory: peak RSS summed over every process of a 1-epoch streamed trial (``run_trial``, two
decoding processes, tiny_cnn at 224 px) on the dataset at 1x and 4x the image count, sampled
every 20 ms from ``/proc`` (Linux); ``--train``: a 2-worker Ray Train run instead (the driver, the
local Ray it starts, both Train workers and their decoding processes).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_jpegs(folder: Path, n: int, side: int, classes: int = 10) -> Path:
    """``n`` JPEGs of about ``side x 0.875 side`` px (smooth noise, quality 90) as an ImageFolder."""
    from PIL import Image

    rng = np.random.default_rng(n)
    for split, count in (("train", n), ("test", max(classes, n // 10))):
        for i in range(count):
            d = folder / split / f"c{i % classes}"
            d.mkdir(parents=True, exist_ok=True)
            w, h = side + int(rng.integers(-20, 20)), int(side * 0.875) + int(rng.integers(-20, 20))
            small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((w, h), Image.BICUBIC).save(d / f"{i}.jpg", quality=90)
    return folder


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (index 0 is the state)."""
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def tree(root: int) -> list[int]:
    """``root`` and every process below it (Linux ``/proc``)."""
    parents: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parents.setdefault(int(_stat(int(d))[1]), []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += parents.get(pid, [])
    return out


def cpu_seconds(pid: int) -> float:
    f = _stat(pid)
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_bytes(pid: int) -> int:
    return int(_stat(pid)[21]) * os.sysconf("SC_PAGE_SIZE")


class CpuMeter:
    """CPU seconds (user + system) spent by this process and its descendants inside the block."""

    def __enter__(self) -> "CpuMeter":
        self._stop = threading.Event()
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._poll(self.base)
        self.last.update(self.base)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def _poll(self, into: dict[int, float]) -> None:
        for pid in tree(os.getpid()):
            try:
                into[pid] = cpu_seconds(pid)
            except (OSError, IndexError, ValueError):
                pass

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            self._poll(self.last)

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self._poll(self.last)
        self.cpu = sum(v - self.base.get(pid, 0.0) for pid, v in self.last.items())


def raypair_rate(folder: Path, cores: int, batch: int, draft: bool = True) -> tuple[float, float]:
    import torch

    from raypair.config import DataConfig
    from raypair.data.sources import resolve
    from raypair.data.stream import _Batches, _one_thread
    from raypair.data.stream_decode import Decoder
    from raypair.data.stream_index import index_splits

    tr, _ = index_splits(resolve(DataConfig(name=folder.name, root=str(folder.parent))))
    dec = Decoder(tr, "imagenet", train_aug=True, seed=0, draft=draft)
    rows = np.random.default_rng(0).permutation(len(tr))
    data = _Batches(dec, [rows[a:a + batch] for a in range(0, len(rows), batch)], 0)
    with CpuMeter() as m:
        n = sum(len(y) for _, y, _ in torch.utils.data.DataLoader(data, batch_size=None, num_workers=cores,
                                                                   worker_init_fn=_one_thread))
    return n / m.wall / cores, n / m.cpu


def torchvision_rate(folder: Path, cores: int, batch: int) -> tuple[float, float]:
    import torch
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.PILToTensor()])
    ds = datasets.ImageFolder(str(folder / "train"), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=cores,
                                         worker_init_fn=lambda _: torch.set_num_threads(1))
    with CpuMeter() as m:
        n = sum(len(y) for _, y in loader)
    return n / m.wall / cores, n / m.cpu


def ray_data_rate(folder: Path, cores: int, batch: int) -> tuple[float, float]:
    import ray
    import torch
    from torchvision import transforms

    ray.init(num_cpus=cores, include_dashboard=False, logging_level="error", log_to_driver=False)
    crop = transforms.Compose([transforms.ToPILImage(), transforms.RandomResizedCrop(224),
                               transforms.RandomHorizontalFlip(), transforms.PILToTensor()])
    ds = ray.data.read_images(str(folder / "train"), mode="RGB").map(
        lambda r: {"image": crop(torch.from_numpy(r["image"]).permute(2, 0, 1)).numpy()})
    for _ in range(2):  # the first pass starts the workers; the second is timed
        with CpuMeter() as m:
            n = sum(len(b["image"]) for b in ds.iter_batches(batch_size=batch))
    ray.shutdown()
    return n / m.wall / cores, n / m.cpu


_TRIAL = """
import sys
sys.path.insert(0, {root!r})
from raypair.config import build_run
from raypair.loop import run_trial
run = build_run({{"method": {{"name": "erm"}}, "model": {{"name": "tiny_cnn"}}, "batch_size": 64, "epochs": 1,
                 "eval_batch_size": 64, "data": {{"name": {name!r}, "root": {parent!r}, "mode": "stream",
                 "pipeline": "imagenet", "workers": 2}}, "scale": {{"threads": 1}}}})
run_trial(run, lambda m, c: None)
"""


_TRAIN = """
import sys, tempfile
sys.path.insert(0, {root!r})
from pathlib import Path
from raypair.config import build_run
from raypair.runner import train
from raypair.runner.cluster import start_ray
run = build_run({{"method": {{"name": "erm"}}, "model": {{"name": "tiny_cnn"}}, "batch_size": 64, "epochs": 1,
                 "eval_batch_size": 64, "data": {{"name": {name!r}, "root": {parent!r}, "mode": "stream",
                 "pipeline": "imagenet", "workers": 1}},
                 "scale": {{"workers": 2, "trainer": "train", "cpus_per_worker": 1, "threads": 1,
                            "gpus_per_worker": 0}}}})
start_ray(None, [run])
train.fit(run, "memory", Path(tempfile.mkdtemp()))
"""


def peak_rss(folder: Path, under_train: bool = False) -> float:
    """Peak over time of the summed RSS (MB) of a 1-epoch streamed trial's process tree; ``under_train``:
    a 2-worker Ray Train run (the driver, the Ray it starts, the Train workers and their decoders)."""
    code = (_TRAIN if under_train else _TRIAL).format(root=str(ROOT), name=folder.name, parent=str(folder.parent))
    proc = subprocess.Popen([sys.executable, "-c", code])
    peak = 0
    while proc.poll() is None:
        total = 0
        for pid in tree(proc.pid):
            try:
                total += rss_bytes(pid)
            except (OSError, IndexError, ValueError):
                pass
        peak = max(peak, total)
        time.sleep(0.02)
    if proc.returncode:
        raise SystemExit(f"the trial failed ({proc.returncode})")
    return peak / 2**20


def prepared(folder: Path, max_size: int) -> Path:
    """``folder``'s images as ``raypair data prepare --max-size`` stores them (its own encoder:
    shorter side ``max_size``, JPEG quality 90), in the same ImageFolder layout."""
    from raypair.data.prepare.writer import Encoding, Item, encode

    out = folder.with_name(f"{folder.name}-max{max_size}")
    for src in folder.rglob("*.jpg"):
        dst = out / src.relative_to(folder)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(encode(Item("train", src.read_bytes(), 0, str(src)), Encoding(max_size=max_size)))
    return out


def main() -> None:  # over 30 lines: the rows alternated, then the table and the memory rows, in print order
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--side", type=int, default=400)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ray", action="store_true", help="add the Ray Data row")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--train", action="store_true", help="the memory rows under a 2-worker Ray Train run")
    ap.add_argument("--max-size", type=int, default=256,
                    help="the prepared row: images stored as `data prepare --max-size` does (0: no such row)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_jpegs(Path(tmp) / f"jpegs{a.side}", a.n, a.side)
        small = prepared(folder, a.max_size) if a.max_size else None
        rates: dict[str, list[tuple[float, float]]] = {"raypair stream": [], "raypair stream, no draft": [],
                                                       "torchvision ImageFolder": []}
        for _ in range(a.repeats):  # alternated: a shared machine's load falls on every row alike
            rates["raypair stream"].append(raypair_rate(folder, a.cores, a.batch))
            if small is not None:
                rates.setdefault(f"raypair stream, prepared --max-size {a.max_size}", []).append(
                    raypair_rate(small, a.cores, a.batch))
            rates["raypair stream, no draft"].append(raypair_rate(folder, a.cores, a.batch, draft=False))
            rates["torchvision ImageFolder"].append(torchvision_rate(folder, a.cores, a.batch))
        if a.ray:
            rates["Ray Data read_images + map"] = [ray_data_rate(folder, a.cores, a.batch)]
        med = {k: [statistics.median(r[i] for r in v) for i in (0, 1)] for k, v in rates.items()}
        base = med["torchvision ImageFolder"]
        print(f"decode + RandomResizedCrop(224) + flip, {a.n} JPEGs ~{a.side}x{int(a.side * 0.875)} px, "
              f"{a.cores} worker processes, median of {a.repeats}")
        print("| path | img/s per core (wall) | vs torchvision | img per CPU-second | vs torchvision |\n"
              "|---|---|---|---|---|")
        for k, (wall, cpu) in med.items():
            print(f"| {k} | {wall:.1f} | {wall / base[0]:.2f}x | {cpu:.1f} | {cpu / base[1]:.2f}x |")
        if not a.no_memory:
            big = make_jpegs(Path(tmp) / f"big{a.side}", 4 * a.n, a.side)
            one, four = peak_rss(folder, a.train), peak_rss(big, a.train)
            what = "2-worker Ray Train run (1 decoding process a worker)" if a.train else \
                "streamed trial (2 decoding processes)"
            print(f"\npeak RSS, 1-epoch {what}: 1x ({a.n} images) {one:.0f} MB, "
                  f"4x ({4 * a.n} images) {four:.0f} MB, ratio {four / one:.3f}")


if __name__ == "__main__":
    main()
