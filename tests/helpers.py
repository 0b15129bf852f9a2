"""The tests' shared builders, written once (tests/project/test_layout.py refuses a second copy).

The repository's paths and files; the data info a method reads; a method built as the loop builds
it; the mixing methods' unique-label batch; seeded generators; small uint8 pools; what a training
step needs (method, optimiser, loader); the knob alternatives of a config field; a toy ImageFolder
of real images; a free port; a store's MLflow child runs. Fixtures live in tests/conftest.py.
Test modules import these as ``from helpers import ...`` (pyproject's pytest ``pythonpath``).
Beyond torch and raypair.ops, imports are lazy (inside the functions): the project tests load no
model stack, Ray or MLflow.
"""
from __future__ import annotations

import socket
import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from raypair.ops.losses import one_hot

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "search_spaces" / "quickstart.yaml"
DIGITS = ROOT / "tests" / "data" / "ablation_digits.yaml"  # a short ablation on the offline digits
SEQUENTIAL = ROOT / "tests" / "data" / "sequential_digits.yaml"  # a short seeds-until-decided one

CIFAR_MEAN, CIFAR_STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def data_info(size: int, num_classes: int = 10, mean: tuple = CIFAR_MEAN, std: tuple = CIFAR_STD,
              **fields: Any) -> SimpleNamespace:
    """What a method reads of its data: classes, a 3 x size x size image, the normalisation (CIFAR-10's
    by default), and any other ``fields`` (``name``, ``classes``)."""
    return SimpleNamespace(num_classes=num_classes, image_shape=(3, size, size), mean=mean, std=std, **fields)


CIFAR_8 = data_info(8, name="cifar10")
CIFAR_32 = data_info(32, name="cifar10")

# the mixing methods' batch (tests/methods): K classes, B images of S x S (256 pixels, so pixel
# fractions are exact floats), unique labels (class c is sample c, so a target row names its partner)
MIX_K, MIX_B, MIX_S = 10, 8, 16
MIX_INFO = data_info(MIX_S, MIX_K, mean=(0.5,) * 3, std=(0.25,) * 3)
MIX_Y = torch.arange(MIX_B)
MIX_ONE_HOT = one_hot(MIX_Y, MIX_K)


def method_of(method: dict, info: Any, run: dict | None = None, *, model: dict | None = None, init_seed: int = 0,
              generator_seed: int | None = 0, pool: Any = None):
    """The ``method`` config built as the loop builds it: the run (``run``'s fields) on ``model``
    (tiny_cnn by default), the model's init from torch seed ``init_seed``, the method generator seeded
    ``generator_seed`` (None: the run's ``method`` stream) and ``pool``."""
    from raypair.config import run_model
    from raypair.methods import build_method

    cfg = run_model().model_validate({"method": method, "model": model or {"name": "tiny_cnn"}, **(run or {})})
    torch.manual_seed(init_seed)
    return build_method(cfg, info, pool=pool, generator_seed=generator_seed)


def mix_method(name: str, seed: int = 0, **cfg: Any):
    """A mixing method of ``cfg`` on the mixing batch's data (a 5-epoch run), generator seeded ``seed``."""
    return method_of({"name": name, **cfg}, MIX_INFO, {"epochs": 5}, generator_seed=seed)


def mix_images(seed: int = 0) -> torch.Tensor:
    return torch.randn(MIX_B, 3, MIX_S, MIX_S, generator=torch.Generator().manual_seed(seed))


def mix_partner_of(target: torch.Tensor) -> torch.Tensor:
    """The partner j of every row, read off a unique-label target (a row with one class: itself)."""
    other = target.clone()
    other[torch.arange(MIX_B), MIX_Y] = 0
    return torch.where(other.max(1).values > 0, other.argmax(1), MIX_Y)


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


def next_draw(g: torch.Generator) -> float:
    """The generator's next U[0, 1) value: equal only if the same number of values was drawn before."""
    return float(torch.rand((), generator=g))


def uint8_pool(n: int, classes: int, info: Any = CIFAR_8):
    """A training pool (a DeviceLoader) of ``n`` random uint8 8 x 8 images (seed 5), labels cycling over
    ``classes``, augmented with pad 2 as the loader does."""
    from raypair.data import DeviceLoader

    x = torch.randint(0, 256, (n, 3, 8, 8), generator=gen(5), dtype=torch.uint8)
    return DeviceLoader(x, torch.arange(n) % classes, batch_size=8, mean=info.mean, std=info.std,
                        train=True, augment=True, pad=2)


def field_bounds(field: Any) -> tuple[float, float]:
    lo, hi = -1e9, 1e9
    for m in field.metadata:
        lo = max(lo, getattr(m, "ge", getattr(m, "gt", lo)))
        hi = min(hi, getattr(m, "le", getattr(m, "lt", hi)))
    return lo, hi


def alternatives(field: Any, default: Any) -> list[Any]:
    """Other valid-looking values of a field: other Literal options, the flipped bool, other numbers."""
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if field.examples:  # free-text fields (timm names) list valid alternatives
        return [v for v in field.examples if v != default]
    if typing.get_origin(ann) is typing.Literal:
        return [a for a in args if a != default]
    if typing.get_origin(ann) is typing.Union and args and typing.get_origin(args[0]) is typing.Literal:
        return [a for a in typing.get_args(args[0]) if a != default]
    if ann is bool:
        return [not default]
    lo, hi = field_bounds(field)
    if ann is int or int in args:
        base = 0 if default is None else default
        return [v for v in (base + 1, base - 1, base + 5, base * 2, 1, 3) if lo <= v <= hi and v != default]
    if ann is float or float in args:
        base = 1.0 if default is None else float(default)
        cands = [base * 2, base / 2, base + 0.25, base - 0.25, (lo + hi) / 2 if hi < 1e9 else base + 1, 0.3, 0.7]
        return [v for v in cands if lo < v < hi and v != default] or [v for v in cands if lo <= v <= hi and v != default]
    return []


def folder_dataset(root: Path, train: dict[int, int], test: int, size: tuple[int, int] | None = None) -> None:
    """Real images (scikit-learn's digits, 8x8 grey) as an ImageFolder tree: ``train[k]`` per class k;
    ``size`` (width, height): each scan enlarged to it (bilinear), e.g. an ImageNet-sized image."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for k, n in train.items():
        idx = np.flatnonzero(d.target == k)
        for split, rows in (("train", idx[:n]), ("test", idx[n:n + test])):
            (root / split / f"c{k}").mkdir(parents=True, exist_ok=True)
            for i in rows:
                img = Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8))
                (img.resize(size, Image.BILINEAR) if size else img).save(root / split / f"c{k}" / f"{i}.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_children(storage: Path, experiment: str) -> list:
    """The child runs (trials, pairs) of ``experiment`` in the MLflow store under ``storage``; none
    before the experiment exists."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000) if "mlflow.parentRunId" in r.data.tags]


def mlflow_runs(storage: Path, experiment: str):
    """(client, parent runs, child runs) of ``experiment`` in the MLflow store under ``storage``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


LOOP_INFO = data_info(16, name="cifar10", classes=tuple("abcdefghij"))


def loop_loader(aug: str, seed: int = 0):
    """64 random uint8 16 x 16 images (seed ``seed``) in batches of 8, augmented as ``aug`` names it
    (``base``: none; ``...aa...``: with AutoAugment), as a DeviceLoader."""
    from raypair.data import DeviceLoader

    x = torch.randint(0, 256, (64, 3, 16, 16), generator=gen(seed), dtype=torch.uint8)
    return DeviceLoader(x, torch.arange(64) % 10, batch_size=8, mean=LOOP_INFO.mean, std=LOOP_INFO.std, train=True,
                        augment=aug != "base", autoaugment="cifar10" if "aa" in aug else None, pad=2)


def loop_parts(method_cfg: dict[str, Any], extra: dict[str, Any]) -> tuple[Any, Any, Any]:
    """What a training step needs: the method of ``method_cfg`` (a 1-epoch run of batch 8 with the
    ``extra`` run fields; init seed 0; its pool a ``base+`` loader of seed 1), its optimiser, and a
    loader of its ``aug``."""
    from raypair.config import run_model
    from raypair.loop import trial_optimizer
    from raypair.methods import build_method

    run = run_model().model_validate({"method": method_cfg, "model": {"name": "tiny_cnn"}, "epochs": 1,
                                      "batch_size": 8, **extra})
    torch.manual_seed(0)
    method = build_method(run, LOOP_INFO, pool=loop_loader("base+", seed=1))
    opt = trial_optimizer(run, method)
    return method, opt, loop_loader(method_cfg.get("aug", "base+"))


def acc_stats(acc: float) -> dict[str, float]:
    """An epoch's training stats at accuracy ``acc`` (what PairTraining's schedule reads)."""
    return {"train_acc": acc, "train_loss": 1.0}


# ------------------------------------------------ stand-ins of the seeds' archives (data prepare)
def smooth_image(seed: int, size: tuple[int, int]):
    """A smooth uint8 ``[H, W, 3]`` image (``size`` = width, height): JPEG keeps it within a few levels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    c = rng.uniform(40, 215, (3, 3))
    img = np.stack([c[i, 0] + 30 * np.sin(3 * xx + c[i, 1] / 50) + 30 * np.cos(2 * yy + c[i, 2] / 50) for i in range(3)], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(img, quality: int = 95) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(img).save(out, "JPEG", quality=quality)
    return out.getvalue()


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    """A tar (gzip when the name ends .gz or .tgz) holding ``files`` in this order."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz" if path.name.endswith(("gz", "tgz")) else "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def cifar100_standin(folder: Path, labels: dict[str, list[int]], names: list[str]) -> dict[str, Any]:
    """``cifar-100-python.tar.gz`` as the official one lays it out (pickled dicts with bytes keys,
    ``data`` N x 3072 uint8 in CHW order, ``fine_labels``); the images it holds, per split [N, 32, 32, 3]."""
    import pickle

    import numpy as np

    files, images = {}, {}
    for split, ys in labels.items():
        x = np.stack([smooth_image(1000 * len(split) + i, (32, 32)) for i in range(len(ys))])
        images[split] = x
        d = {b"data": x.transpose(0, 3, 1, 2).reshape(len(ys), -1), b"fine_labels": list(ys),
             b"coarse_labels": [0] * len(ys), b"filenames": [f"{i}.png".encode() for i in range(len(ys))]}
        files[f"cifar-100-python/{split}"] = pickle.dumps(d, protocol=4)
    files["cifar-100-python/meta"] = pickle.dumps({b"fine_label_names": [n.encode() for n in names],
                                                   b"coarse_label_names": [b"all"]}, protocol=4)
    write_tar(folder / "cifar-100-python.tar.gz", files)
    return images


def flowers_standin(folder: Path, labels: list[int], split: dict[str, list[int]]) -> list[Any]:
    """``102flowers.tgz`` (``jpg/image_00001.jpg`` ...), ``imagelabels.mat`` (1-based labels) and
    ``setid.mat`` (``trnid`` / ``valid`` / ``tstid``, 1-based image ids); the images, in id order."""
    import numpy as np
    import scipy.io

    imgs = [smooth_image(i, (40, 32)) for i in range(len(labels))]
    write_tar(folder / "102flowers.tgz", {f"jpg/image_{i + 1:05d}.jpg": jpeg_bytes(im) for i, im in enumerate(imgs)})
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    scipy.io.savemat(folder / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in split.items()})
    return imgs


def _annotations(fnames: list[str], classes: list[int]) -> Any:
    import numpy as np

    rec = np.empty((1, len(fnames)), dtype=[(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2",
                                                                "class", "fname")])
    for i, (f, c) in enumerate(zip(fnames, classes)):
        rec[0, i] = (np.uint8(1), np.uint8(1), np.uint8(30), np.uint8(20), np.uint8(c), f)
    return rec


def cars_standin(folder: Path, train: list[int], test: list[int], names: list[str]) -> dict[str, list[Any]]:
    """Stanford Cars: ``cars_train.tgz`` / ``cars_test.tgz`` (``cars_train/00001.jpg``), the devkit's
    ``devkit/cars_meta.mat`` and ``devkit/cars_train_annos.mat``, ``cars_test_annos_withlabels.mat``;
    labels 1-based as there. The images per split, in file order."""
    import numpy as np
    import scipy.io

    (folder / "devkit").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    out = {}
    for split, ys, annos in (("train", train, "devkit/cars_train_annos.mat"),
                             ("test", test, "cars_test_annos_withlabels.mat")):
        fnames = [f"{i + 1:05d}.jpg" for i in range(len(ys))]
        out[split] = [smooth_image(500 * len(split) + i, (36, 28)) for i in range(len(ys))]
        write_tar(folder / f"cars_{split}.tgz", {f"cars_{split}/{f}": jpeg_bytes(im) for f, im in zip(fnames, out[split])})
        scipy.io.savemat(folder / annos, {"annotations": _annotations(fnames, ys)})
    return out


def imagenet_standin(folder: Path, wnids: list[str], val: list[str], train_per_class: int = 0,
                     labels: str = "devkit") -> dict[str, Any]:
    """``ILSVRC2012_img_val.tar`` (``ILSVRC2012_val_00000001.JPEG`` ..., image i of class ``val[i-1]``),
    its labels as the devkit (``ILSVRC2012_devkit_t12.tar.gz``: ``data/meta.mat`` with the leaf synsets
    in ILSVRC2012_ID order = ``wnids`` as given, plus one non-leaf; ``data/ILSVRC2012_validation_ground_truth.txt``)
    or as Kaggle's ``LOC_val_solution.csv``; and, if ``train_per_class``, ``ILSVRC2012_img_train.tar``
    of per-class tars. Returns {val id: image} and {(wnid, i): image} of train."""
    import io

    import numpy as np
    import scipy.io

    vimgs = {i + 1: smooth_image(7000 + i, (48 + 4 * (i % 3), 40)) for i in range(len(val))}
    write_tar(folder / "ILSVRC2012_img_val.tar", {f"ILSVRC2012_val_{i:08d}.JPEG": jpeg_bytes(im) for i, im in vimgs.items()})
    if labels == "devkit":
        syn = np.empty((len(wnids) + 1,), dtype=[(f, "O") for f in ("ILSVRC2012_ID", "WNID", "words", "gloss",
                                                                      "num_children")])
        for k, w in enumerate(wnids):
            syn[k] = (np.uint16(k + 1), w, f"words of {w}", "gloss", np.uint8(0))
        syn[len(wnids)] = (np.uint16(len(wnids) + 1), "n99999999", "a parent", "gloss", np.uint8(2))
        meta = io.BytesIO()
        scipy.io.savemat(meta, {"synsets": syn.reshape(-1, 1)})
        gt = "".join(f"{wnids.index(w) + 1}\n" for w in val).encode()
        write_tar(folder / "ILSVRC2012_devkit_t12.tar.gz", {
            "ILSVRC2012_devkit_t12/data/meta.mat": meta.getvalue(),
            "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": gt})
    else:
        rows = "".join(f"ILSVRC2012_val_{i + 1:08d},{w} 1 2 30 20 {w} 3 4 10 12\n" for i, w in enumerate(val))
        (folder / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + rows)
    timgs = {(w, i): smooth_image(9000 + 10 * wnids.index(w) + i, (44, 40)) for w in wnids for i in range(train_per_class)}
    if train_per_class:
        inner = {}
        for w in wnids:
            tmp = folder / f"{w}.tar"
            write_tar(tmp, {f"{w}_{i}.JPEG": jpeg_bytes(timgs[w, i]) for i in range(train_per_class)})
            inner[f"{w}.tar"] = tmp.read_bytes()
            tmp.unlink()
        write_tar(folder / "ILSVRC2012_img_train.tar", inner)
    return {"val": vimgs, "train": timgs}


# the knobs that make one step of each method mix at 224 px (SP past its warm-up, PT's pair gate open)
METHOD_CASES_224 = {"erm": {}, "cutout": {}, "mixup": {}, "cutmix": {"cutmix_prob": 1.0}, "sample_pairing": {},
                    "bc": {}, "mixup_c": {"ft_epochs": 0}, "vpl": {}, "pair_training": {"alpha_mode": "one"}}


def stream_dataset(root: Path, layout: str, n_train: int, n_test: int, size: tuple[int, int] = (24, 20),
                   fmt: str = "JPEG", classes: int | None = None, per_shard: int = 16, vary: bool = True) -> Path:
    """A generated dataset ``root/<layout>`` (imagefolder, parquet or webdataset) of noise images,
    ``size`` (width, height), plus 0-8 px by image where ``vary``; image i's label is ``i % classes`` (None: ``i``,
    one class per image, so a batch's labels name its images; test image j is labelled like train's j)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(len(layout) + n_train)
    folder = root / layout
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        items = []
        for i in range(n):
            w, h = size[0] + 4 * (i % 3) * vary, size[1] + 4 * (i % 2) * vary
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, fmt)
            items.append((i if classes is None else i % classes, buf.getvalue()))
        _write_split(folder, split, items, layout, "jpg" if fmt == "JPEG" else "png", per_shard)
    return folder


def _write_split(folder: Path, split: str, items: list, layout: str, ext: str, per_shard: int) -> None:
    """One split of :func:`stream_dataset` in its layout."""
    import io
    import tarfile

    if layout == "imagefolder":
        for i, (label, data) in enumerate(items):
            (folder / split / f"{label:04d}").mkdir(parents=True, exist_ok=True)
            (folder / split / f"{label:04d}" / f"{i:04d}.{ext}").write_bytes(data)
    elif layout == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"image": [{"bytes": d, "path": None} for _, d in items], "label": [lb for lb, _ in items]})
        pq.write_table(table, folder / f"{split}.parquet", row_group_size=per_shard)
    else:
        for s in range(0, len(items), per_shard):
            with tarfile.open(folder / f"{split}-{s // per_shard:04d}.tar", "w") as tf:
                for i, (label, data) in enumerate(items[s:s + per_shard], start=s):
                    for name, blob in ((f"{i:06d}.{ext}", data), (f"{i:06d}.cls", str(label).encode())):
                        info = tarfile.TarInfo(name)
                        info.size = len(blob)
                        tf.addfile(info, io.BytesIO(blob))
