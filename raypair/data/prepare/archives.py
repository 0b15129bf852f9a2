"""The official archives: where to get each (nothing is downloaded at run time), their MD5 sums
and sizes where known, and reading members out of (nested) tar files as a stream.

The MD5 sums are torchvision's (``torchvision/datasets/{cifar,flowers102,imagenet}.py``), which
checks the same files; the one size listed is that of ``ILSVRC2012_img_train.tar`` as ImageNet
serves it. ``--verify auto`` sums files up to 8 GiB and compares the size of larger ones (summing
147 GB takes minutes); ``md5`` always sums; ``size`` compares sizes only; ``none`` skips."""
from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path
from typing import IO, Iterator, Optional

from raypair.config import ConfigError

# file -> (MD5, size in bytes or None where not known)
KNOWN: dict[str, tuple[str, Optional[int]]] = {
    "cifar-100-python.tar.gz": ("eb9058c3a382ffc7106e4002c42a8d85", None),
    "102flowers.tgz": ("52808999861908f626f3c1f4e79d11fa", None),
    "imagelabels.mat": ("e0620be6f572b9609742df49c70aed4d", None),
    "setid.mat": ("a5357ecc9cb78c4bef273ce3793fc85c", None),
    "ILSVRC2012_img_train.tar": ("1d675b47d978889d74fa0da5fadfb00e", 147_897_477_120),
    "ILSVRC2012_img_val.tar": ("29b22e2961454d5413ddabcf34fc5622", None),
    "ILSVRC2012_devkit_t12.tar.gz": ("fa75699e90414af021442c21a62c3abf", None),
}
WHERE = {  # where each dataset's files come from, for the message naming a missing one
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "flowers102": "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz, imagelabels.mat, setid.mat)",
    "stanford_cars": "the Stanford Cars page https://ai.stanford.edu/~jkrause/cars/car_dataset.html or a mirror of it "
                     "(cars_train.tgz, cars_test.tgz, car_devkit.tgz unpacked, cars_test_annos_withlabels.mat)",
    "imagenet1k": "https://image-net.org/download-images after registering (ILSVRC2012_img_train.tar, "
                  "ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz; or Kaggle's LOC_val_solution.csv)",
}
WHERE["ilsvrc_mini"] = WHERE["imagenet1k"].replace("ILSVRC2012_img_train.tar, ", "")
VERIFY = ("auto", "md5", "size", "none")
_SUM_UP_TO = 8 * 2**30


def need(src: Path, dataset: str, *names: str) -> Path:
    """The first of ``names`` that is a file in ``src`` (or ``src/devkit``); one line if none is."""
    for n in names:
        for p in (src / n, src / "devkit" / n):
            if p.is_file():
                return p
    raise ConfigError("--from", f"{' or '.join(names)} not found in {src}; get it from {WHERE[dataset]} and "
                                f"pass the folder holding it with --from", str(src))


def verify(path: Path, how: str) -> None:
    """Compare ``path`` with its official MD5 or size (module docstring); one line if it differs."""
    if how == "none" or path.name not in KNOWN:
        return
    md5, size = KNOWN[path.name]
    actual = path.stat().st_size
    if how == "size" or (how == "auto" and actual > _SUM_UP_TO):
        if size is not None and actual != size:
            raise ConfigError("--from", f"{path}: {actual} bytes, the official file has {size}: it is cut short or "
                                        "not the official archive (--verify none skips the check)")
        return
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**22), b""):
            digest.update(block)
    if digest.hexdigest() != md5:
        raise ConfigError("--from", f"{path}: MD5 {digest.hexdigest()} is not the official {md5}: the file is "
                                    "damaged or not the official archive (--verify none skips the check)")


def members(tar: Path | IO[bytes], where: str) -> Iterator[tuple[str, bytes]]:
    """``(member name, bytes)`` of each regular file of a tar (any compression), read as a stream;
    a damaged archive is one line naming ``where``."""
    try:
        with (tarfile.open(tar, "r|*") if isinstance(tar, Path) else tarfile.open(fileobj=tar, mode="r|*")) as tf:
            for m in tf:
                if m.isfile():
                    fh = tf.extractfile(m)
                    yield m.name, fh.read() if fh is not None else b""
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ConfigError("--from", f"{where}: not a readable tar archive: {e}") from None


def load_mat(path: Path | IO[bytes], where: str = "") -> dict:
    """A MATLAB file's variables (scipy, squeezed); one line if it is not one."""
    import scipy.io

    try:
        return scipy.io.loadmat(str(path) if isinstance(path, Path) else path, squeeze_me=True)
    except Exception as e:  # noqa: BLE001 - scipy's error for a damaged or foreign file reads the same
        raise ConfigError("--from", f"{where or path}: not a readable .mat file: {str(e)[:200]}") from None
