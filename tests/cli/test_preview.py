"""raypair preview writes a real image grid of transformed training images."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from raypair.cli import main
from raypair.methods import METHODS, in_chans


@pytest.mark.parametrize("method", METHODS.names())
def test_preview_every_method_offline(tmp_path, capsys, method):
    out = tmp_path / f"{method}.png"
    assert main(["preview", method, "--data", "digits", "--set", "data.image_size=32", "--n", "8",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    img = Image.open(out)
    factor = in_chans(METHODS.get(method).Config, 1)  # images per network input
    assert img.size[0] == 4 * 32 * 3 * factor  # 4 tiles a row, 3x upscaled, 2C inputs side by side
    assert img.size[1] > 2 * (32 * 3 + 30)  # two rows of tiles with captions
    pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50  # real pixels, not a blank canvas


def test_preview_bad_input(tmp_path, capsys):
    assert main(["preview", "nosuch", "--data", "digits", "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.startswith("raypair: error: method.name: unknown method")
