"""Initial weights (issue 21 item 4): ``model.weights: PATH`` (.pt/.pth read with weights_only, or
.safetensors) and ``model.pretrained: true`` (timm's weights, from the Hugging Face cache here: the
machine is offline). Every weights file is written by the test itself from a real net. Checked: the
loaded tensors equal the file's; a classifier of another class count stays as a fresh build makes it;
a 6- or 1-channel stem is timm's adapt_input_conv of the file's (so the stacked pair [x1; x2] meets
the pretrained stem as (x1 + x2) / 2); a missing, extra or mis-shaped key is one ConfigError naming
the first such key, at validate time (shapes only) and at build time; ``raypair validate`` exits 2
with one line before any trial."""
from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file

from raypair.cli import main
from raypair.config import ConfigError, ModelConfig, build_run
from raypair.models import build_model, check_model


def _net(name: str = "tiny_cnn", classes: int = 10, seed: int = 1, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(name=name, kwargs=kwargs), classes, 3)


def _save(state: dict, path: Path) -> str:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif path.stem == "legacy":  # torch's pre-1.6 format, which cannot be memory-mapped
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("file", ["w.pt", "w.pth", "w.safetensors", "legacy.pth"])
def test_a_local_state_dict_loads_exactly(file: str, tmp_path: Path) -> None:
    src = _net()
    path = _save(src.state_dict(), tmp_path / file)
    cfg = ModelConfig(name="tiny_cnn", weights=path)
    check_model(cfg, 10, 3, (16, 16))
    torch.manual_seed(2)  # another init: every tensor must come from the file
    got = build_model(cfg, 10, 3)
    for key, value in src.state_dict().items():
        assert torch.equal(got.state_dict()[key], value), key


def test_another_class_count_reinitialises_only_the_classifier(tmp_path: Path) -> None:
    src = _net()
    path = _save(src.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(3)
    fresh = build_model(ModelConfig(name="tiny_cnn"), 5, 3)
    torch.manual_seed(3)
    got = build_model(ModelConfig(name="tiny_cnn", weights=path), 5, 3)
    for key, value in got.state_dict().items():
        want = fresh.state_dict()[key] if key.startswith("fc.") else src.state_dict()[key]
        assert torch.equal(value, want), key
    assert got.get_classifier().out_features == 5


def test_a_headless_file_keeps_the_built_classifier(tmp_path: Path) -> None:
    src = _net()
    path = _save({k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}, tmp_path / "w.safetensors")
    got = build_model(ModelConfig(name="tiny_cnn", weights=path), 10, 3)
    assert torch.equal(got.features[0].weight, src.features[0].weight)


def test_the_stacked_pair_meets_the_pretrained_stem_as_their_mean(tmp_path: Path) -> None:
    src = _net("tiny_cnn", norm=False)  # a stem conv with a bias
    path = _save(src.state_dict(), tmp_path / "w.pt")
    pair = build_model(ModelConfig(name="tiny_cnn", weights=path, kwargs={"norm": False}), 10, 6)
    grey = build_model(ModelConfig(name="tiny_cnn", weights=path, kwargs={"norm": False}), 10, 1)
    x1, x2 = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(pair.features[0](torch.cat([x1, x2], 1)), src.features[0]((x1 + x2) / 2), atol=1e-5)
        g = torch.randn(2, 1, 8, 8)
        assert torch.allclose(grey.features[0](g), src.features[0](g.expand(-1, 3, -1, -1)), atol=1e-5)
        assert torch.equal(pair.features[4].weight, src.features[4].weight)  # only the stem is adapted


def test_a_grey_pair_cannot_reuse_an_rgb_stem(tmp_path: Path) -> None:
    """2 channels (grey images stacked in pairs by mixup-C) are neither one image nor whole RGB images."""
    path = _save(_net().state_dict(), tmp_path / "w.pt")
    for where in ("validate", "build"):
        with pytest.raises(ConfigError, match=r"^model\.weights: tiny_cnn's pretrained stem takes 3 input channels; "
                                              r"2 \(the data's channels x method\.images_per_input\) cannot"):
            cfg = ModelConfig(name="tiny_cnn", weights=path)
            check_model(cfg, 10, 2, (16, 16)) if where == "validate" else build_model(cfg, 10, 2)
    with pytest.raises(ConfigError, match=r"^model\.pretrained: test_resnet's pretrained stem takes 3"):
        check_model(ModelConfig(name="test_resnet", pretrained=True), 10, 2, (32, 32))


def _refused(cfg: ModelConfig, match: str, classes: int = 10) -> None:
    for where in ("validate", "build"):
        with pytest.raises(ConfigError, match=match) as err:
            (check_model(cfg, classes, 3, (16, 16)) if where == "validate" else build_model(cfg, classes, 3))
        assert str(err.value).startswith("model.weights: ") and "\n" not in str(err.value), where


def test_the_first_misfit_key_is_named(tmp_path: Path) -> None:
    state = _net().state_dict()
    narrow = _save(_net(width=8).state_dict(), tmp_path / "narrow.pt")
    _refused(ModelConfig(name="tiny_cnn", weights=narrow),
             r"key features\.0\.weight has shape \[8, 3, 3, 3\] in the file, \[16, 3, 3, 3\] in the model")
    missing = _save({k: v for k, v in state.items() if k != "features.4.weight"}, tmp_path / "missing.safetensors")
    _refused(ModelConfig(name="tiny_cnn", weights=missing), r"key features\.4\.weight \[32, 16, 3, 3\] is not in the file")
    extra = _save({**state, "head.proj.weight": torch.zeros(2, 2)}, tmp_path / "extra.pt")
    _refused(ModelConfig(name="tiny_cnn", weights=extra), r"key head\.proj\.weight of the file is not in the model")


def test_a_file_for_another_architecture(tmp_path: Path) -> None:
    path = _save(_net("resnet56_cifar").state_dict(), tmp_path / "r56.pth")
    _refused(ModelConfig(name="tiny_cnn", weights=path), r"does not fit tiny_cnn: key features\.0\.weight")


def test_wrappers_prefixes_and_batchnorm_counters(tmp_path: Path) -> None:
    src = _net()
    body = {f"module.{k}": v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = _save({"state_dict": body, "epoch": torch.tensor(3)}, tmp_path / "ddp.pt")
    got = build_model(ModelConfig(name="tiny_cnn", weights=path), 10, 3)
    assert torch.equal(got.fc.weight, src.fc.weight)


def test_not_a_state_dict(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip or a pickle")
    _refused(ModelConfig(name="tiny_cnn", weights=str(junk)), "cannot read it as a state dict")
    torch.save({"lr": 0.1}, tmp_path / "hyper.pt")
    _refused(ModelConfig(name="tiny_cnn", weights=str(tmp_path / "hyper.pt")), "not a mapping of names to tensors")
    torch.save({"w": torch.zeros(1), "opt": Path("x")}, tmp_path / "pickled.pt")  # weights_only refuses the Path
    _refused(ModelConfig(name="tiny_cnn", weights=str(tmp_path / "pickled.pt")), "cannot read it as a state dict")
    _refused(ModelConfig(name="tiny_cnn", weights=str(tmp_path / "absent.pt")), "no such file")


def test_validate_reads_only_the_safetensors_header(tmp_path: Path) -> None:
    path = Path(_save(_net().state_dict(), tmp_path / "w.safetensors"))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # the header and shapes intact, the tensors cut short
    cfg = ModelConfig(name="tiny_cnn", weights=str(path))
    check_model(cfg, 10, 3, (16, 16))
    with pytest.raises(ConfigError, match="^model.weights: cannot read it as a state dict"):
        build_model(cfg, 10, 3)


def test_the_config_fields() -> None:
    with pytest.raises(ConfigError, match=r"^model\.weights: .*not both"):
        build_run({"method": {"name": "erm"}, "model": {"pretrained": True, "weights": "w.pt"}})
    with pytest.raises(ConfigError, match=r"^model\.weights: not a state dict file .* \(got 'w\.npz'\)"):
        build_run({"method": {"name": "erm"}, "model": {"weights": "w.npz"}})
    with pytest.raises(ConfigError, match=r"^model\.kwargs\.pretrained: .*use model\.pretrained"):
        build_run({"method": {"name": "erm"}, "model": {"kwargs": {"pretrained": True}}})
    with pytest.raises(ConfigError, match=r"^model\.weights: its ~user has no home folder here"):
        build_run({"method": {"name": "erm"}, "model": {"weights": "~no_such_user_here/w.pt"}})
    assert Path(ModelConfig(weights="w.pt").weights).is_absolute()


def _run_file(tmp_path: Path, model: dict, method: str = "erm") -> Path:
    run = {"name": "r", "data": {"name": "digits", "image_size": 16}, "model": model, "method": {"name": method},
           "epochs": 1, "batch_size": 32}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    return path


def test_validate_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _save(_net("resnet18_cifar").state_dict(), tmp_path / "r18.safetensors")
    code = main(["validate", str(_run_file(tmp_path, {"name": "tiny_cnn", "weights": path}))])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "model.weights: does not fit tiny_cnn" in lines[0], lines
    ok = _save(_net().state_dict(), tmp_path / "tiny.safetensors")
    assert main(["validate", str(_run_file(tmp_path, {"name": "tiny_cnn", "weights": ok}, "mixup_c"))]) == 0


# ------------------------------------------------------------------------------ timm's weights
def test_pretrained_on_a_net_timm_has_no_weights_for() -> None:
    for name in ("tiny_cnn", "alexnet_tv", "resnext29_8x64d_cifar"):  # raypair's: refused when the config is read
        with pytest.raises(ConfigError, match=f"^model.pretrained: {name} is one of raypair's nets, .*set "
                                              "model.weights: PATH"):
            build_run({"method": {"name": "erm"}, "model": {"name": name, "pretrained": True}})
    with pytest.raises(ConfigError, match="^model.pretrained: timm has no pretrained weights for darknet17; "
                                          "set model.weights: PATH"):  # a timm net without weights: at validate
        check_model(ModelConfig(name="darknet17", pretrained=True), 10, 3, (32, 32))


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache in tmp_path, set as huggingface_hub (and so timm) reads it."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_pretrained_offline_without_the_cache_is_one_line(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cfg = ModelConfig(name="test_resnet", pretrained=True)
    with pytest.raises(ConfigError, match="^model.pretrained: .*not in the Hugging Face cache .*HF_HUB_OFFLINE is "
                                          "set; set model.weights: PATH"):
        check_model(cfg, 10, 3, (32, 32))
    with pytest.raises(ConfigError, match="^model.pretrained: timm could not fetch the weights for test_resnet"):
        build_model(cfg, 10, 3)


def test_pretrained_with_the_hub_unreachable_is_one_line(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(ConfigError, match="^model.pretrained: .*the hub cannot be reached .*set model.weights"):
        check_model(ModelConfig(name="test_resnet", pretrained=True), 10, 3, (32, 32))


def test_pretrained_from_the_cache_loads_through_timm(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The online path, offline: timm's own test_resnet weights, written by the test into the
    cache layout huggingface_hub reads, are loaded by timm with 10 classes and a 6-channel stem."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(4)
    src = timm.create_model("test_resnet")  # 1000 classes, RGB: as the hub's file
    commit = "0" * 40
    repo = hf_cache / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(src.state_dict(), str(repo / "snapshots" / commit / "model.safetensors"))
    cfg = ModelConfig(name="test_resnet", pretrained=True)
    check_model(cfg, 10, 6, (32, 32))
    got = build_model(cfg, 10, 6)
    assert got.get_classifier().out_features == 10
    x1, x2 = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(got.conv1[0](torch.cat([x1, x2], 1)), src.conv1[0]((x1 + x2) / 2), atol=1e-5)
    assert torch.equal(got.state_dict()["layer1.0.conv1.weight"], src.state_dict()["layer1.0.conv1.weight"])
