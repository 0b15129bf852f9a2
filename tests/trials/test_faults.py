"""A fault of the storage is told apart from a trial's own error, wherever it sits in the chain
(a cause, a context, a Ray Train worker's failure) or when Ray hands it back as text only; and the
command line turns the pause into one line and exit code 3."""
from __future__ import annotations

import errno

import pytest

from raypair.trials.faults import EXIT_CODE, StorageFault, fault_in_text, storage_fault


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EIO])
def test_storage_errors_are_faults_anywhere_in_the_chain(code):
    err = OSError(code, "boom", "/store/trials/t0000/state.pt")
    assert storage_fault(err) == f"boom ({errno.errorcode[code]}): /store/trials/t0000/state.pt"
    try:
        try:
            raise err
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert storage_fault(outer) is not None
    group = RuntimeError("worker group failed")
    group.worker_failures = {1: err}  # Ray Train's worker group error
    assert storage_fault(group) is not None


@pytest.mark.parametrize("err", [OSError(errno.ENOENT, "gone", "/x"), ValueError("nan"), ConnectionResetError(),
                                 OSError("no errno")])
def test_other_errors_are_the_trials_own(err):
    assert storage_fault(err) is None


def test_a_fault_handed_back_as_text_is_recognised():
    line = "OSError: [Errno 28] No space left on device: '/store/trials/t0001/.state.pt.tmp'"
    assert fault_in_text(line) == "No space left on device (ENOSPC): /store/trials/t0001/.state.pt.tmp"
    assert fault_in_text("PermissionError: [Errno 13] Permission denied") == "Permission denied (EACCES)"
    assert fault_in_text("FileNotFoundError: [Errno 2] No such file or directory: 'x'") is None
    assert fault_in_text("ValueError: the loss is nan") is None


def test_the_command_line_pauses_with_one_line_and_exit_3(monkeypatch, capsys):
    from raypair.cli import commands, main

    def paused(args):
        raise StorageFault("storage fault (No space left on device (ENOSPC): /s); the experiment is paused")

    monkeypatch.setattr(commands, "cmd_validate", paused)
    assert main(["validate", "x.yaml"]) == EXIT_CODE == 3
    err = capsys.readouterr().err
    assert err.startswith("raypair: paused: storage fault") and err.count("\n") == 1


def test_sqlite_on_a_full_or_read_only_disk_is_a_fault():
    import sqlite3

    assert storage_fault(sqlite3.OperationalError("database or disk is full")) == \
        "database or disk is full (OperationalError)"
    wrapped = RuntimeError("(sqlite3.OperationalError) attempt to write a readonly database")
    assert storage_fault(wrapped) is not None and fault_in_text(str(wrapped)) is not None
    assert storage_fault(sqlite3.OperationalError("no such table: runs")) is None
