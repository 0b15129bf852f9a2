"""scikit-learn's bundled digits (``data.name: digits``), the offline default: 1797 8x8 grey
images, scaled to ``data.image_size`` (default 16) and replicated to RGB. The test split is a
fixed class-stratified 20% (seed :data:`DIGITS_TEST_SEED`, not ``split_seed``). Small and
bundled, so decoded in memory and never cached on disk."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

from raypair.config import ConfigError, DataConfig
from raypair.data.sources.base import Located, Raw, Source, register

DIGITS_TEST_SEED = 1797  # fixed, not split_seed: the digits test split never changes
DIGITS_TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=4)
def _digits(size: int) -> Raw:
    import torch

    from raypair.ops.sampling import holdout_mask, seeded_generator
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float()[:, None].mul(255 / 16)  # [N, 1, 8, 8], 0..16 -> 0..255
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                        antialias=size < 8)
    x = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(d.target).long()
    test = holdout_mask(y, DIGITS_TEST_FRACTION, seeded_generator("digits.test", DIGITS_TEST_SEED))
    return Raw(x[~test], y[~test], x[test], y[test], tuple(str(k) for k in range(10)))


@register
class Digits(Source):
    name = "sklearn"
    order = 0
    datasets = ("digits",)
    looks_for = "scikit-learn's bundled digits"

    def find(self, folder: Path, cfg: DataConfig) -> Optional[Located]:
        if cfg.name not in self.datasets:
            raise ConfigError("data.name", f"source '{self.name}' serves only 'digits'", cfg.name)
        return Located(self.name)

    def read(self, loc: Located, size: Optional[int]) -> Raw:
        return _digits(size or 16)

    def key_files(self, loc: Located) -> Optional[list[Path]]:
        return None

    @staticmethod
    def label_file() -> Optional[Path]:
        """scikit-learn's ``digits.csv.gz`` (label last), found without importing scikit-learn."""
        import importlib.util

        spec = importlib.util.find_spec("sklearn")
        for base in (spec.submodule_search_locations or []) if spec else []:
            path = Path(base) / "datasets" / "data" / "digits.csv.gz"
            if path.is_file():
                return path
        return None
