"""``raypair data prepare`` / ``raypair data standin`` through the command line: what it prints,
the no-op re-run, and bad input as one line on stderr with exit 2 before anything is written."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cifar100_standin, flowers_standin

from raypair.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prepare_then_a_rerun_that_says_it_has_nothing_to_do(tmp_path, capsys):
    cifar100_standin(tmp_path, {"train": [0, 1, 1], "test": [1, 0]}, ["a", "b"])
    argv = ["data", "prepare", "cifar100", "--from", str(tmp_path), "--out", str(tmp_path / "d"), "--verify", "none"]
    code, out, err = _run(capsys, *argv)
    assert (code, err) == (0, "")
    assert out.strip() == (f"wrote {tmp_path / 'd' / 'cifar100'}: 2 classes; 3 train, 2 test; use it with "
                           f"data.name=cifar100 and RAYPAIR_DATA={tmp_path / 'd'}")
    code, out, _ = _run(capsys, *argv)
    assert code == 0 and out.startswith(f"{tmp_path / 'd' / 'cifar100'} is already prepared: nothing to do")
    assert "it was prepared with" not in out
    code, out, _ = _run(capsys, *argv, "--max-size", "24")  # other options: said, not silently ignored
    assert code == 0 and out.rstrip().endswith("; it was prepared with --max-size None, not 24")


def test_standin_writes_a_dataset_the_data_root_serves(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAYPAIR_DATA", str(tmp_path))
    code, out, _ = _run(capsys, "data", "standin", "flowers102", "--classes", "3", "--train", "2", "--test", "1")
    assert code == 0 and "3 classes; 6 train, 3 test" in out
    assert sorted(p.name for p in (tmp_path / "flowers102" / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]


@pytest.mark.parametrize("argv, line", [
    (["data", "prepare", "cifar100", "--out", "{t}/d"], "raypair: error: --from: required"),
    (["data", "prepare", "nosuch", "--from", "{t}", "--out", "{t}/d"], "raypair: error: NAME: no such dataset"),
    (["data", "prepare", "cifar100", "--from", "{t}/absent"], "raypair: error: --from: no such folder"),
    (["data", "prepare", "flowers102", "--from", "{t}", "--out", "{t}/d", "--verify", "none"],
     "raypair: error: --from: 102flowers.tgz not found in {t}; get it from https://www.robots.ox.ac.uk/"),
    (["data", "prepare", "cifar100", "--from", "{t}", "--max-size", "0"], "raypair: error: --max-size: must lie in"),
    (["data", "prepare", "cifar100", "--from", "{t}", "--verify", "sha"], "raypair: error: --verify: invalid choice"),
    (["data", "fetch", "cifar100"], "raypair: error: action: invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, line):
    code, out, err = _run(capsys, *[a.replace("{t}", str(tmp_path)) for a in argv])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(line.replace("{t}", str(tmp_path))), err
    assert not (tmp_path / "d").exists()


def test_a_corrupt_member_is_named_on_the_command_line(tmp_path, capsys):
    flowers_standin(tmp_path, [1, 2], {"trnid": [1, 2], "valid": [], "tstid": [2]})
    (tmp_path / "imagelabels.mat").write_bytes(b"not a mat file")
    code, _, err = _run(capsys, "data", "prepare", "flowers102", "--from", str(tmp_path), "--out",
                        str(tmp_path / "d"), "--verify", "none")
    assert code == 2 and err.startswith(f"raypair: error: --from: {tmp_path / 'imagelabels.mat'}: not a readable .mat")
    assert err.count("\n") == 1 and not Path(tmp_path / "d" / "flowers102").exists()
