"""What code a run ran: the source hash changes with any byte of raypair's source, the tags name
it and the library versions, and a node whose raypair differs from the driver's is one line."""
from __future__ import annotations

import shutil

import pytest

from raypair.config import ConfigError
from raypair.trials import provenance


def test_the_source_hash_follows_every_byte_of_the_package(tmp_path):
    copy = tmp_path / "raypair"
    shutil.copytree(provenance.package_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert provenance.digest(copy) == provenance.source_hash()
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.pyc").write_bytes(b"compiled")  # not source
    assert provenance.digest(copy) == provenance.source_hash()
    with open(copy / "loop" / "epoch.py", "a") as f:
        f.write("\n# one more line\n")
    assert provenance.digest(copy) != provenance.source_hash()


def test_the_tags_name_the_commit_the_source_and_the_libraries():
    tags = provenance.tags()
    assert tags["raypair.source_hash"] == provenance.source_hash() and len(tags["raypair.source_hash"]) == 16
    assert tags["raypair.git_sha"]
    import mlflow
    import ray
    import torch

    assert tags["raypair.version.torch"] == torch.__version__.split("+")[0] or torch.__version__.startswith(
        tags["raypair.version.torch"])
    assert tags["raypair.version.ray"] == ray.__version__ and tags["raypair.version.mlflow"] == mlflow.__version__
    assert {"raypair.version.timm", "raypair.version.optuna"} <= set(tags)


def test_a_node_with_another_raypair_is_one_line_naming_it(tmp_path):
    me = provenance.here()
    provenance.check_nodes(me, [("10.0.0.2 (abcd1234)", dict(me))])
    other = {**me, "source_hash": "0" * 16, "package": str(tmp_path / "raypair")}
    with pytest.raises(ConfigError) as e:
        provenance.check_nodes(me, [("10.0.0.1 (aaaa0000)", dict(me)), ("10.0.0.2 (abcd1234)", other)])
    assert e.value.field == "raypair" and "10.0.0.2" in str(e.value) and str(tmp_path / "raypair") in str(e.value)
    assert me["package"] in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("lib", ["torch", "timm"])
def test_a_node_with_another_torch_or_timm_is_one_line_naming_it(lib):
    me = provenance.here()
    other = {**me, "versions": {**me["versions"], lib: "0.0.1"}}
    provenance.check_nodes(me, [("10.0.0.2 (abcd1234)", {**me, "versions": {**me["versions"], "mlflow": "0.0.1"}})])
    with pytest.raises(ConfigError) as e:
        provenance.check_nodes(me, [("10.0.0.2 (abcd1234)", other)])
    assert e.value.field == f"versions.{lib}" and "10.0.0.2" in str(e.value) and "0.0.1" in str(e.value)
    assert me["versions"][lib] in str(e.value) and "\n" not in str(e.value)


def test_a_node_probe_writes_and_removes_its_file_and_names_a_failure(tmp_path):
    probe = tmp_path / ".probe-1"
    probe.write_text("raypair")
    got = provenance.node_probe(str(probe))
    assert got["sees"] and got["write"] is None and got["code"]["source_hash"] == provenance.source_hash()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".probe-1"]  # its own probe removed
    got = provenance.node_probe(str(tmp_path / "missing" / ".probe-1"))
    assert not got["sees"] and "ENOENT" in got["write"]
