"""Cost of each method's batch transform against one ResNet-18 (CIFAR) training step, measured side
by side in one run, at batch 128 and 512, on the GPU when there is one (bf16 autocast,
channels_last, as the loop trains) and on the CPU otherwise.

    RAYPAIR_DATA=../shared/data python benchmarks/transforms.py [--batches 128 512] [--repeats 20]

Prints, per method and batch size, the transform's median time, the training step's median time
and their ratio. Uses real CIFAR-10 images when RAYPAIR_DATA has them, else random uint8 images
(the ops' cost does not depend on the pixel values). Needs no Ray, MLflow or Optuna.
"""
from __future__ import annotations

import argparse
import statistics
import time
import types
from typing import Callable

import torch

from raypair.config import DataConfig, ModelConfig, run_model
from raypair.data import DeviceLoader, load_splits
from raypair.methods import METHODS, build_method
from raypair.models import build_model


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def images(n: int) -> tuple[torch.Tensor, torch.Tensor, tuple, tuple, str]:
    try:
        s = load_splits(DataConfig(name="cifar10", train_subset=n, test_subset=10))
        return s.train_x, s.train_y, s.info.mean, s.info.std, "CIFAR-10"
    except Exception:  # noqa: BLE001 - no data here: random pixels cost the same
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        return x, torch.arange(n) % 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), "random pixels"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--step-repeats", type=int, default=5)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cl = device.type == "cuda"
    x_all, y_all, mean, std, source = images(2048)
    info = types.SimpleNamespace(num_classes=10, image_shape=(3, 32, 32), mean=mean, std=std, name="cifar10",
                                 classes=tuple(str(i) for i in range(10)))
    name = torch.cuda.get_device_name(device) if cl else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; images: {source}; torch {torch.__version__}")
    print(f"{'method':16} {'batch':>5} {'transform ms':>13} {'train step ms':>14} {'ratio':>8}")
    for b in args.batches:
        pool = DeviceLoader(x_all, y_all, batch_size=b, mean=mean, std=std, device=device, train=True,
                            augment=True, channels_last=cl)
        x, y = next(iter(pool.epoch(0)))
        step_ms = train_step_ms(x, y, device, cl, args.step_repeats)
        for mname in METHODS.names():
            run = run_model().model_validate({"method": {"name": mname}, "model": {"name": "tiny_cnn"},
                                              "epochs": 100})
            m = build_method(run, info, device=device, pool=pool)  # generator seed 0: seed 0, rank 0
            # epoch 51 of 100 at 90% train accuracy: every method is in its mixing phase there
            # (SamplePairing after its warm-up, mixup-C before fine-tuning, PairTraining in D-Mix)
            m.on_epoch_start(51, 100, {"train_acc": 0.9, "train_loss": 0.5})
            with torch.no_grad():
                ms = 1000 * timed(lambda: m.mix(x, y), device, args.repeats)
            print(f"{mname:16} {b:5d} {ms:13.3f} {step_ms:14.1f} {ms / step_ms:8.2%}")


def train_step_ms(x: torch.Tensor, y: torch.Tensor, device: torch.device, cl: bool, repeats: int) -> float:
    model = build_model(ModelConfig(name="resnet18_cifar"), 10, 3).to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cl):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return 1000 * timed(step, device, repeats, warmup=2)


if __name__ == "__main__":
    main()
