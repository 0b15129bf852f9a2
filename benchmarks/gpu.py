"""One device benchmark: raypair's loop and methods on one GPU, side by side with a plain tuned loop,
printed as one table with the targets of issue 13 and pass/fail per row.

    python benchmarks/gpu.py --data DIR            # DIR/cifar10/{train,test}.parquet; CUDA; <= 8 min on an H100/H200
    python benchmarks/gpu.py --device cpu --quick  # the same code paths on the CPU, tiny sizes (the test runs this)

Rows: (a) one fp32 training step of every method on CUDA and on the CPU from the same seed, every
random draw of the CPU step replayed into the CUDA step (``RandomTape``): max |diff| of the
parameters and buffers, and of the loss; (b) an ERM epoch of raypair's loop (``run_trial``) against
a plain tuned loop written here (GPU-resident uint8 images, batched pad-crop-flip as one gather,
bf16 autocast, channels_last, cudnn.benchmark), same process, same data, batch 512 and 128, eager
and compiled (raypair compiles with ``mode="reduce-overhead"`` on CUDA: CUDA graphs); (c) every
method's batch transform (``Method.mix``) against one ResNet-18 step, batch 128; (d) PairTraining /
ERM over a whole short run, and VPL / (CNN + ViT); (e) 1, 2 and 4 concurrent trial processes, each
``run_trial``, started together after a warm-up epoch: aggregate img/s; (f) peak GPU memory per
trial (CPU: peak RSS); (g) ImageNet-shaped streaming: generated ~400x350 JPEGs read by the stream
path (``StreamLoader``: host decoding processes, RandomResizedCrop 224, normalised on the device)
against a ResNet-50 training step at 224 px on device-resident batches, and on CUDA nvjpeg's batch
decode (``torchvision.io.decode_jpeg`` on the device) against PIL on the host. Needs torch, timm,
pyarrow and pydantic; no Ray, MLflow or Optuna.
``--quick`` shrinks every size (tiny nets where a row allows, a few hundred images) and, on the CPU,
compiles with the ``aot_eager`` backend; its pass/fail column is not meaningful. The table is also
written to ``--out`` (default ``$OUT/gpu_bench.md`` when ``$OUT`` is set).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's raypair, installed or not

PROFILES: dict[str, dict[str, Any]] = {
    # model / vit: the nets of (b), (d), (e); subset: training images of (b) and (d) (None: all 50k)
    "full": dict(model="resnet18_cifar", vit="bench_vit_tiny_p4", batches=(512, 128), subset=None, test_subset=1000,
                 timed=2, a_batch=64, c_batch=128, c_repeats=20, step_repeats=10, d_batch=512, d_epochs=5,
                 vpl_batch=256, vpl_epochs=2, e_subset=20000, e_batch=128, e_epochs=2, warm=15, threads=4,
                 g_images=2048, g_batch=128, g_crop=224, g_model="resnet50", g_workers=12),
    "quick": dict(model="tiny_cnn", vit="tiny_vit", batches=(64, 16), subset=256, test_subset=100,
                  timed=1, a_batch=16, c_batch=16, c_repeats=3, step_repeats=1, d_batch=32, d_epochs=3,
                  vpl_batch=32, vpl_epochs=2, e_subset=128, e_batch=16, e_epochs=1, warm=2, threads=1,
                  g_images=64, g_batch=16, g_crop=32, g_model="tiny_cnn", g_workers=1),
}
A_TOL = 1e-4  # (a): fp32 kernels differ between devices in the last bits, not more


def fail(msg: str) -> None:
    print(f"benchmarks/gpu.py: {msg}", file=sys.stderr)
    sys.exit(2)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Row:
    id: str
    figure: str
    value: float
    target: Optional[tuple[str, float]] = None  # ("<=" | ">=", bound)
    detail: str = ""

    def cells(self) -> list[str]:
        val = f"{self.value:.4g}" if math.isfinite(self.value) else "nan"
        if self.target is None:
            return [self.id, self.figure, val, "—", "—", self.detail]
        op, bound = self.target
        ok = math.isfinite(self.value) and (self.value <= bound if op == "<=" else self.value >= bound)
        return [self.id, self.figure, val, f"{'≤' if op == '<=' else '≥'} {bound:g}", "pass" if ok else "FAIL",
                self.detail]


def table(rows: list[Row]) -> str:
    lines = ["| row | figure | value | target | ok | detail |", "| --- | --- | --- | --- | --- | --- |"]
    return "\n".join(lines + ["| " + " | ".join(r.cells()) + " |" for r in rows])


# ----------------------------------------------------------------------------------- helpers
def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: Any, repeats: int, warmup: int = 3) -> float:
    """Median seconds of ``fn()`` (CUDA: events around each call, after a synchronize)."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


@contextlib.contextmanager
def compile_backend(backend: Optional[str]):
    """``torch.compile`` with ``backend`` forced (the loop's own call included); None: unchanged."""
    import torch

    if backend is None:
        yield
        return
    original = torch.compile

    def patched(model: Any = None, **kw: Any) -> Any:
        kw.pop("mode", None)  # modes are inductor's
        return original(model, backend=backend, **kw)

    torch.compile = patched
    try:
        yield
    finally:
        torch.compile = original


def register_bench_vit() -> None:
    """``bench_vit_tiny_p4``: ViT-Tiny (width 192, depth 12, 3 heads) with 4-px patches at 32 px."""
    import timm
    from timm.models import register_model

    if timm.is_model("bench_vit_tiny_p4"):
        return

    def bench_vit_tiny_p4(pretrained: bool = False, **kwargs: Any) -> Any:
        from timm.models.vision_transformer import VisionTransformer

        from raypair.models.head import drop_timm_args

        args = dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3)
        args.update(drop_timm_args(kwargs))
        return VisionTransformer(**args)

    register_model(bench_vit_tiny_p4)


def run_cfg(args: argparse.Namespace, method: dict[str, Any], *, model: str, batch: int, epochs: int,
            subset: Optional[int], compile: bool = False) -> Any:
    from raypair.config import run_model

    return run_model().model_validate({
        "name": "gpu-bench", "method": method, "model": {"name": model}, "epochs": epochs, "batch_size": batch,
        "eval_batch_size": 1024, "checkpoint_every": 10000, "schedule": {"name": "constant"},
        "data": {"name": "cifar10", "root": args.data, "train_subset": subset,
                 "test_subset": args.p["test_subset"]},
        "scale": {"compile": compile, "threads": args.p["threads"], "trainer": "direct"}})


def trial_epochs(cfg: Any, device: Any) -> list[dict[str, Any]]:
    """Each epoch's metrics of ``run_trial(cfg)`` (its ``epoch_time_s`` is synchronised)."""
    from raypair.loop import run_trial

    out: list[dict[str, Any]] = []
    run_trial(cfg, lambda m, _ckpt: out.append(m), device=device)
    return out


# ------------------------------------------------------------------------------- (a) equality
@functools.lru_cache(maxsize=None)
def is_random(packet: Any) -> bool:
    """Whether an aten op draws random numbers: one of its overloads takes a generator (the
    overload without one draws from the default generator)."""
    return any(a.name == "generator" for o in packet.overloads() for a in getattr(packet, o)._schema.arguments)


def random_tape(replay: Optional[list] = None) -> Any:
    """A dispatch mode that records the result of every random op (``is_random``), or, given a recording, overwrites each random op's result with the recorded one:
    the same draws on two devices, whose generators differ."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class RandomTape(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.tape, self.i = (replay, 0) if replay is not None else ([], 0)

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            if not is_random(func.overloadpacket):
                return out
            if not isinstance(out, torch.Tensor):
                raise RuntimeError(f"random op {func} returned {type(out).__name__}, not a tensor")
            if replay is None:
                self.tape.append((str(func), out.detach().cpu().clone()))
                return out
            name, value = self.tape[self.i]
            if name != str(func) or tuple(value.shape) != tuple(out.shape):
                raise RuntimeError(f"random draw {self.i} differs: {func} {tuple(out.shape)} vs {name} {tuple(value.shape)}")
            self.i += 1
            with torch.no_grad():
                out.copy_(value)
            return out

    return RandomTape()


def section_a(args: argparse.Namespace, splits: Any, device: Any) -> list[Row]:
    import torch

    from raypair.data import DeviceLoader
    from raypair.loop import train_step, trial_optimizer
    from raypair.methods import METHODS, build_method

    other = device if device.type == "cuda" else torch.device("cpu")
    b, info = args.p["a_batch"], splits.info
    x_all, y_all = splits.train_x[:8 * b], splits.train_y[:8 * b]
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    rows = []
    try:
        for name in METHODS.names():
            method = {"name": name, **({"vit_model": "tiny_vit"} if name == "vpl" else {})}
            cfg = run_cfg(args, method, model="tiny_cnn", batch=b, epochs=100, subset=None)
            states, losses, tape = [], [], None
            for dev in (torch.device("cpu"), other):
                pool = DeviceLoader(x_all, y_all, batch_size=b, mean=info.mean, std=info.std, device=dev, train=True,
                                    augment=True)
                x, y = next(iter(DeviceLoader(x_all, y_all, batch_size=b, mean=info.mean, std=info.std,
                                              train=True, augment=True).epoch(0)))  # the same batch for both
                torch.manual_seed(0)
                m = build_method(cfg, info, device=dev, pool=pool)
                if tape is not None:  # another stream on the second run: only the replay makes the draws equal
                    torch.rand(7, generator=m.generator, device=dev)
                m.on_epoch_start(51, 100, {"train_acc": 0.9, "train_loss": 0.5})  # every method mixing
                opt = trial_optimizer(cfg, m)
                with random_tape(tape) as rec:
                    _, out = train_step(m, x.to(dev), y.to(dev), opt, amp=False)
                    sync(dev)
                tape = rec.tape
                losses.append(float(out.loss.detach()))
                states.append({k: v.detach().cpu().double() for k, v in m.state_dict().items() if v.is_floating_point()})
            dp = max((states[0][k] - states[1][k]).abs().max().item() for k in states[0])
            dl = abs(losses[0] - losses[1])
            rows.append(Row(f"a.{name}", f"{name}: one fp32 step, max abs diff ({other.type} vs cpu)", max(dp, dl),
                            ("<=", A_TOL), f"params/buffers {dp:.2g}, loss {dl:.2g}; {len(tape)} random draws replayed"))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return rows


# ------------------------------------------------------------------------ (b) loop vs plain loop
def plain_epochs(args: argparse.Namespace, splits: Any, device: Any, batch: int, mode: Optional[str]) -> list[float]:
    """Seconds per epoch of the plain tuned loop: ``warm`` steps, then ``timed`` epochs."""
    import torch
    import torch.nn.functional as F

    from raypair.config import ModelConfig
    from raypair.models import build_model

    cuda = device.type == "cuda"
    bench = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        torch.manual_seed(0)
        model = build_model(ModelConfig(name=args.p["model"]), 10, 3).to(device)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        fwd = model if mode is None else torch.compile(model, mode=mode, dynamic=False)
        xpad = F.pad(splits.train_x.to(device), (4, 4, 4, 4))  # uint8 [N, 3, 40, 40], zeros around
        ys = splits.train_y.to(device)
        mean = torch.tensor(splits.info.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(splits.info.std, device=device).view(1, 3, 1, 1)
        n, ar = len(ys), torch.arange(32, device=device)
        gen = torch.Generator(device).manual_seed(0)
        graphs = cuda and mode == "reduce-overhead"

        def batches():
            perm = torch.randperm(n, device=device, generator=gen)
            for s in range(n // batch):
                idx = perm[s * batch:(s + 1) * batch]
                dy, dx = torch.randint(0, 9, (2, batch, 1), device=device, generator=gen)
                flip = torch.rand(batch, 1, device=device, generator=gen) < 0.5
                cols = torch.where(flip, (dx + ar).flip(1), dx + ar)  # crop and flip in one gather
                xb = xpad[idx[:, None, None, None], torch.arange(3, device=device)[None, :, None, None],
                          (dy + ar)[:, None, :, None], cols[:, None, None, :]]
                xb = (xb.float() / 255 - mean) / std
                yield (xb.contiguous(memory_format=torch.channels_last) if cuda else xb), ys[idx]

        def step(xb: Any, yb: Any) -> None:
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(fwd(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for i, (xb, yb) in enumerate(batches()):
            if i == args.p["warm"]:
                break
            step(xb, yb)
        times = []
        for _ in range(args.p["timed"]):
            sync(device)
            t0 = time.perf_counter()
            for xb, yb in batches():
                step(xb, yb)
            sync(device)
            times.append(time.perf_counter() - t0)
        return times
    finally:
        torch.backends.cudnn.benchmark = bench


def section_b(args: argparse.Namespace, splits: Any, device: Any) -> list[Row]:
    import torch

    rows, cuda = [], device.type == "cuda"
    big, small = args.p["batches"]
    ours: dict[tuple[int, bool], float] = {}
    plain: dict[tuple[int, Optional[str]], float] = {}
    for b in (big, small):
        for compiled in (False, True):
            torch._dynamo.reset()
            log(f"(b) plain loop, batch {b}, {'compiled' if compiled else 'eager'}")
            plain[b, "default" if compiled else None] = min(plain_epochs(args, splits, device, b,
                                                                         "default" if compiled else None))
            torch._dynamo.reset()
            log(f"(b) raypair loop, batch {b}, {'compiled' if compiled else 'eager'}")
            cfg = run_cfg(args, {"name": "erm"}, model=args.p["model"], batch=b, epochs=1 + args.p["timed"],
                          subset=args.p["subset"], compile=compiled)
            ours[b, compiled] = min(m["epoch_time_s"] for m in trial_epochs(cfg, device)[1:])
    torch._dynamo.reset()
    log(f"(b) plain loop, batch {small}, reduce-overhead")
    plain[small, "reduce-overhead"] = min(plain_epochs(args, splits, device, small, "reduce-overhead"))
    how = "reduce-overhead: CUDA graphs" if cuda else "default mode (CPU)"
    for b, target in ((big, ("<=", 1.10)), (small, None)):
        for compiled, kind in ((False, "eager"), (True, "compiled")):
            r, p = ours[b, compiled], plain[b, "default" if compiled else None]
            rows.append(Row(f"b.{b}.{kind}", f"ERM epoch, raypair loop / plain loop, batch {b}, {kind}", r / p, target,
                            f"raypair {r:.3g} s ({how if compiled else 'eager'}), plain {p:.3g} s"
                            + (" (default mode)" if compiled else "")))
    e, g, pg = plain[small, None], ours[small, True], plain[small, "reduce-overhead"]
    rows.append(Row(f"b.{small}.graphs", f"ERM epoch at batch {small}, raypair compiled / plain eager", g / e,
                    ("<=", 0.5), f"raypair {g:.3g} s ({how}), plain eager {e:.3g} s"))
    rows.append(Row(f"b.{small}.plain_graphs", f"plain loop at batch {small}, reduce-overhead / eager", pg / e, None,
                    f"plain {pg:.3g} s vs {e:.3g} s (H100 reference: 1.96 / 4.55 = 0.43)"))
    return rows


# ------------------------------------------------------------------------ (c) transform / step
def section_c(args: argparse.Namespace, splits: Any, device: Any) -> list[Row]:
    import torch
    import torch.nn.functional as F

    from raypair.config import ModelConfig
    from raypair.data import DeviceLoader
    from raypair.methods import METHODS, build_method
    from raypair.models import build_model

    cuda, b, info = device.type == "cuda", args.p["c_batch"], splits.info
    pool = DeviceLoader(splits.train_x, splits.train_y, batch_size=b, mean=info.mean, std=info.std, device=device,
                        train=True, augment=True, channels_last=cuda)
    x, y = next(iter(pool.epoch(0)))
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet18_cifar"), 10, 3).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step_s = timed(step, device, args.p["step_repeats"], warmup=1 if args.quick else 3)
    rows = []
    for name in METHODS.names():
        method = {"name": name, **({"vit_model": "tiny_vit"} if name == "vpl" else {})}
        m = build_method(run_cfg(args, method, model="tiny_cnn", batch=b, epochs=100, subset=None), info,
                         device=device, pool=pool)
        m.on_epoch_start(51, 100, {"train_acc": 0.9, "train_loss": 0.5})  # every method in its mixing phase
        with torch.no_grad():
            t = timed(lambda: m.mix(x, y), device, args.p["c_repeats"])
        rows.append(Row(f"c.{name}", f"{name}: batch transform / ResNet-18 step, batch {b} (%)", 100 * t / step_s,
                        ("<=", 3.0), f"{1000 * t:.3g} ms / {1000 * step_s:.3g} ms"))
    return rows


# ------------------------------------------------------------------------- (d) epoch ratios
def section_d(args: argparse.Namespace, device: Any) -> list[Row]:
    p, model = args.p, args.p["model"]

    def run(method: dict[str, Any], net: str, batch: int, epochs: int) -> list[dict[str, Any]]:
        log(f"(d) {method['name']} with {net}, batch {batch}, {epochs} epochs")
        return trial_epochs(run_cfg(args, method, model=net, batch=batch, epochs=epochs, subset=p["subset"]), device)

    erm = run({"name": "erm"}, model, p["d_batch"], p["d_epochs"])
    pt = run({"name": "pair_training", "t1": 0.3, "t2": 0.6}, model, p["d_batch"], p["d_epochs"])
    te, tp = (sum(m["epoch_time_s"] for m in h[1:]) for h in (erm, pt))  # epoch 1 warms both up
    stages = "/".join(f"{m.get('stage', 0):.1f}" for m in pt)
    rows = [Row("d.pair_training", f"PairTraining / ERM over a run ({p['d_epochs']} epochs, batch {p['d_batch']})",
                tp / te, ("<=", 1.30), f"{tp:.3g} s vs {te:.3g} s over epochs 2+; t1 0.3, t2 0.6, stage per epoch {stages}")]
    vb, ve = p["vpl_batch"], p["vpl_epochs"]
    vpl = run({"name": "vpl", "vit_model": p["vit"]}, model, vb, ve)
    cnn = run({"name": "erm"}, model, vb, ve)
    vit = run({"name": "erm"}, p["vit"], vb, ve)
    tv, tc, tt = (min(m["epoch_time_s"] for m in h[1:]) for h in (vpl, cnn, vit))
    rows.append(Row("d.vpl", f"VPL epoch / (CNN epoch + ViT epoch), {model} + {p['vit']}, batch {vb}",
                    tv / (tc + tt), ("<=", 0.90), f"{tv:.3g} s vs {tc:.3g} s + {tt:.3g} s"))
    return rows


# --------------------------------------------------------------------- (e, f) packed trials
def worker(spec: dict[str, Any]) -> None:
    """One trial process of (e): ``run_trial``; after its warm-up epoch it says READY and waits for GO."""
    import torch

    args = argparse.Namespace(data=spec["data"], p=spec["p"])
    device = torch.device(spec["device"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = run_cfg(args, {"name": "erm"}, model=spec["model"], batch=spec["batch"], epochs=1 + spec["epochs"],
                  subset=spec["subset"])
    state: dict[str, Any] = {"images": 0.0, "train_s": 0.0}

    def report(m: dict[str, Any], _ckpt: Any) -> None:
        if m["epoch"] == 1:
            print("READY", flush=True)
            sys.stdin.readline()
            state["go"] = time.time()
        else:
            state["images"] += m["train_samples"]
            state["train_s"] += m["epoch_time_s"]
            state["end"] = time.time()

    with compile_backend(spec.get("backend")):
        from raypair.loop import run_trial

        run_trial(cfg, report, device=device)
    if device.type == "cuda":
        state["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        state["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(state), flush=True)


def packed(args: argparse.Namespace, device: Any, k: int) -> list[dict[str, Any]]:
    p = args.p
    spec = dict(data=args.data, p=p, device=str(device), model=p["model"], batch=p["e_batch"], epochs=p["e_epochs"],
                subset=p["e_subset"], backend=args.backend)
    procs, errs = [], []
    for _ in range(k):
        err = tempfile.TemporaryFile(mode="w+")
        errs.append(err)
        procs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True))
    try:
        for proc, err in zip(procs, errs):
            line = proc.stdout.readline()
            while line and line.strip() != "READY":
                line = proc.stdout.readline()
            if not line:
                proc.wait()
                err.seek(0)
                raise RuntimeError(f"a trial process exited with {proc.returncode}: {err.read()[-2000:]}")
        for proc in procs:
            proc.stdin.write("GO\n")
            proc.stdin.flush()
        results = [json_line(proc) for proc in procs]
        for proc in procs:
            proc.wait(timeout=120)
        return results
    finally:  # on any failure no process is left waiting for its GO
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def json_line(proc: Any) -> dict[str, Any]:
    for line in proc.stdout:
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"a trial process ended without its result (exit {proc.wait()})")


def section_ef(args: argparse.Namespace, device: Any) -> list[Row]:
    import torch

    cuda, p = device.type == "cuda", args.p
    if cuda:
        torch.cuda.empty_cache()
    rates, peaks = {}, {}
    for k in (1, 2, 4):
        log(f"(e) {k} concurrent trial process(es)")
        res = packed(args, device, k)
        window = max(r["end"] for r in res) - min(r["go"] for r in res)
        rates[k] = sum(r["images"] for r in res) / window
        peaks[k] = max(r["peak_mib"] for r in res)
    what = f"{p['model']}, batch {p['e_batch']}, {p['e_subset']} images x {p['e_epochs']} epochs each"
    rows = [Row("e.1", f"1 trial process: img/s ({what})", rates[1], None, "after a warm-up epoch")]
    for k, target in ((2, None), (4, (">=", 2.5))):
        rows.append(Row(f"e.{k}", f"{k} concurrent trial processes / 1, aggregate img/s", rates[k] / rates[1],
                        target, f"{rates[k]:.4g} img/s vs {rates[1]:.4g}"))
    if cuda:
        total, what = torch.cuda.get_device_properties(device).total_memory / 2**20, "GPU memory (max allocated)"
    else:
        total, what = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20, "RSS (CPU run)"
    for k in (1, 4):
        rows.append(Row(f"f.{k}", f"peak {what} per trial, {k} trial(s) at once (MiB)", peaks[k],
                        ("<=", total / 4), f"target: 4 trials fit in {total:.0f} MiB"))
    return rows


# ---------------------------------------------------------------------------------------- main
def section_g(args: argparse.Namespace, device: Any) -> list[Row]:
    """(g) streamed ImageNet-shaped data: img/s the stream path delivers to the device, img/s of a
    training step there, their ratio (>= 1: the host decoding keeps the device busy); nvjpeg on CUDA."""
    import importlib.util

    import torch

    from raypair.config import DataConfig
    from raypair.data.sources import resolve
    from raypair.data.stream import StreamLoader
    from raypair.data.stream_index import index_splits

    p = args.p
    spec = importlib.util.spec_from_file_location("stream_bench", ROOT / "benchmarks" / "stream.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder = bench.make_jpegs(Path(tempfile.mkdtemp()) / "jpegs", p["g_images"], 400)
    tr, _ = index_splits(resolve(DataConfig(name=folder.name, root=str(folder.parent))))
    loader = StreamLoader(tr, batch_size=p["g_batch"], mean=(0.5,) * 3, std=(0.25,) * 3, device=device, train=True,
                          augment=True, pipeline="imagenet", crop_size=p["g_crop"], resize_size=p["g_crop"] * 8 // 7,
                          workers=p["g_workers"], channels_last=device.type == "cuda")
    sum(len(y) for _, y in loader.epoch(0))  # warm: the decoding processes start
    t0 = time.perf_counter()
    n = sum(len(y) for _, y in loader.epoch(1))
    sync(device)
    stream = n / (time.perf_counter() - t0)
    step = _g_step_rate(args, device)
    rows = [Row("g.stream", f"stream path to the {device.type}: img/s ({p['g_workers']} decoding processes, "
                f"RRC {p['g_crop']})", stream, None, f"{n} images of ~400x350"),
            Row("g.step", f"{p['g_model']} training step at {p['g_crop']} px: img/s", step),
            Row("g.feed", "stream img/s / training step img/s", stream / step, (">=", 1.0),
                "below 1: the host decoding is what bounds the epoch")]
    if device.type == "cuda":
        try:
            ratio, why = _nvjpeg_ratio(folder, device), "torchvision.io.decode_jpeg(device='cuda')"
        except Exception as e:  # noqa: BLE001 - a torchvision built without nvjpeg: the row says so
            ratio, why = math.nan, f"{type(e).__name__}: {str(e)[:200]}"
        rows.append(Row("g.nvjpeg", "nvjpeg batch decode on the GPU / PIL decode on one host core, img/s", ratio,
                        None, why))
    return rows


def _g_step_rate(args: argparse.Namespace, device: Any) -> float:
    import timm
    import torch

    import raypair.models  # noqa: F401  (registers raypair's nets, tiny_cnn among them, into timm)

    p = args.p
    net = timm.create_model(p["g_model"], num_classes=1000).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(p["g_batch"], 3, p["g_crop"], p["g_crop"], device=device)
    y = torch.randint(0, 1000, (p["g_batch"],), device=device)

    def one() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return p["g_batch"] / timed(one, device, p["step_repeats"])


def _nvjpeg_ratio(folder: Path, device: Any) -> float:
    import io

    import torch
    from PIL import Image
    from torchvision.io import decode_jpeg

    raw = [f.read_bytes() for f in sorted(folder.rglob("*.jpg"))]
    files = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in raw]
    gpu = timed(lambda: decode_jpeg(files, device=device), device, 3)
    t0 = time.perf_counter()
    for b in raw:  # the same bytes, no copy timed on PIL's side
        Image.open(io.BytesIO(b)).convert("RGB").load()
    return (time.perf_counter() - t0) / gpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--data", default=os.environ.get("RAYPAIR_DATA"), help="folder holding cifar10/*.parquet")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: the same code paths in a few minutes")
    ap.add_argument("--sections", default="abcdefg", help="which of a-g to run (e and f run together)")
    ap.add_argument("--out", default=None, help="also write the table here (default $OUT/gpu_bench.md if $OUT is set)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    try:
        import pydantic  # noqa: F401
    except ImportError:
        fail("needs pydantic (raypair's configs): pip install pydantic, or put its wheels on PYTHONPATH")
    if args.worker is not None:
        return worker(json.loads(args.worker))
    if not args.data or not (Path(args.data) / "cifar10" / "train.parquet").exists():
        fail(f"--data: no cifar10/train.parquet under {args.data!r} (give --data DIR or set RAYPAIR_DATA)")
    args.data = str(Path(args.data).resolve())
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: CUDA is not available here (use --device cpu --quick)")
    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else torch.device("cpu")
    args.p = PROFILES["quick" if args.quick else "full"]
    args.backend = "aot_eager" if args.quick and device.type == "cpu" else None
    torch.set_num_threads(args.p["threads"])
    register_bench_vit()
    t0 = time.perf_counter()
    from raypair.config import DataConfig
    from raypair.data import load_splits

    splits = load_splits(DataConfig(name="cifar10", root=args.data, train_subset=args.p["subset"]))
    log(f"data: {len(splits.train_y)} training images in {time.perf_counter() - t0:.1f} s")
    # b (the compiles) runs last: if a run is cut short, the rows so far are already written
    sections = {"a": lambda: section_a(args, splits, device), "c": lambda: section_c(args, splits, device),
                "d": lambda: section_d(args, device), "e": lambda: section_ef(args, device),
                "g": lambda: section_g(args, device),
                "b": lambda: section_b(args, splits, device)}
    rows: list[Row] = []
    with compile_backend(args.backend):
        for key, run in sections.items():
            if key not in args.sections and not (key == "e" and "f" in args.sections):
                continue
            log(f"section {key}")
            ts = time.perf_counter()
            try:
                rows += run()
                log(f"section {key}: {time.perf_counter() - ts:.0f} s")
            except Exception as e:  # noqa: BLE001 - one broken section must not hide the others
                first = str(e).splitlines()[0][:300] if str(e) else ""
                rows.append(Row(f"{key}.error", f"section {key} failed", math.nan, None, f"{type(e).__name__}: {first}"))
                log(f"section {key} failed: {e!r}")
            report(args, device, rows, done=False)
    report(args, device, rows, done=True)


def report(args: argparse.Namespace, device: Any, rows: list[Row], done: bool) -> None:
    """The table (rows in section order), to stdout once at the end, and to ``--out`` after every section."""
    import torch

    rows = sorted(rows, key=lambda r: r.id[0])  # stable: each section keeps its order
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    text = "\n".join([
        f"device: {dev}; torch {torch.__version__}; profile {'quick' if args.quick else 'full'}"
        + (f" (compile backend {args.backend})" if args.backend else ""),
        f"command: python benchmarks/gpu.py --device {args.device}{' --quick' if args.quick else ''}"
        + (f" --sections {args.sections}" if args.sections != "abcdefg" else ""), "",
        table(rows), "", f"wall time: {time.perf_counter() - START:.0f} s" + ("" if done else " (so far)")])
    if done:
        print(text, flush=True)
    out = args.out or (str(Path(os.environ["OUT"]) / "gpu_bench.md") if os.environ.get("OUT") else None)
    if out:
        Path(out).write_text(text + "\n")


if __name__ == "__main__":
    main()
