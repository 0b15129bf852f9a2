"""raypair on a multi-node Ray cluster: Ray's own ``ray.cluster_utils.Cluster`` (a head and worker
nodes, each its own raylet, on this host), joined by ``raypair`` drivers with ``--address``.

A direct sweep, a Train-backed sweep (2 workers per trial, one CPU per node, so each trial spans
both nodes) and an ablation finish, with every trial's nodes read back from its store
(``workers.jsonl``) and its MLflow tags; then a node is removed while trials run on it, and those
trials are retried on the other nodes from their checkpoints (``tune.max_failures``) with one
MLflow run each and no epoch twice. Also: a local sweep's Ray listens on loopback only.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ray
import ray  # noqa: E402

from helpers import DIGITS, QUICK, free_port, mlflow_children


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of one CPU each; Ray's temp dir (and so its "current cluster" file) private."""
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="rpc", dir="/tmp")  # short: Ray's socket paths live under it
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    os.makedirs(f"{tmp}/ray")
    c = Cluster(initialize_head=True, shutdown_at_exit=True,
                head_node_args={"num_cpus": 1, "temp_dir": f"{tmp}/ray", "gcs_server_port": free_port(),
                                "include_dashboard": True, "dashboard_host": "127.0.0.1",
                                "dashboard_port": free_port()})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        c.shutdown()
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old
        shutil.rmtree(tmp, ignore_errors=True)


def _node_ids(c) -> set[str]:
    return {n.node_id for n in [c.head_node, *c.worker_nodes]}


def _raypair(args: list[str], timeout: int = 600, **popen: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "raypair", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, **popen)


def _workers(exp_dir: Path) -> dict[str, list[dict]]:
    out = {}
    for f in sorted((exp_dir / "trials").glob("*/workers.jsonl")):
        out[f.parent.name] = [json.loads(line) for line in f.read_text().splitlines()]
    return out


def _metric_steps(storage: Path, run_id: str, key: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_direct_sweep_runs_trials_on_both_nodes(cluster, tmp_path):
    storage = tmp_path / "runs"
    out = _raypair(["tune", str(QUICK), "--address", cluster.address, "--storage", str(storage),
                    "--name", "direct", "--num-samples", "4", "--set", "epochs=2"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Ray: joined" in out.stdout and "(2 nodes, 2 CPU, 0 GPU)" in out.stdout
    workers = _workers(storage / "direct")
    assert len(workers) == 4
    used = {w["node_id"] for ws in workers.values() for w in ws}
    assert used == _node_ids(cluster), "trials ran on both nodes"
    children = mlflow_children(storage, "direct")
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    for r in children:  # where each ran is in MLflow too
        assert set(r.data.tags["raypair.nodes"].split(",")) <= _node_ids(cluster)


def test_train_sweep_spreads_each_trials_workers_over_both_nodes(cluster, tmp_path):
    storage = tmp_path / "runs"
    out = _raypair(["tune", str(QUICK), "--address", cluster.address, "--storage", str(storage),
                    "--name", "train2", "--num-samples", "2", "--set", "epochs=2", "--set", "scale.workers=2"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    workers = _workers(storage / "train2")
    assert len(workers) == 2
    for key, ws in workers.items():  # 2 workers x 1 CPU on nodes of 1 CPU: one worker per node
        assert sorted(w["rank"] for w in ws) == [0, 1], key
        assert {w["node_id"] for w in ws} == _node_ids(cluster), key
    children = mlflow_children(storage, "train2")
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert all(len(r.data.tags["raypair.nodes"].split(",")) == 2 for r in children)


def test_ablation_on_the_cluster(cluster, tmp_path):
    storage = tmp_path / "runs"
    out = _raypair(["ablate", str(DIGITS), "--address", cluster.address, "--storage", str(storage),
                    "--seeds", "0,1", "--set", "epochs=2"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    children = mlflow_children(storage, "digits_aug")
    assert len(children) == 6 and all(r.info.status == "FINISHED" for r in children)
    used = {w["node_id"] for ws in _workers(storage / "digits_aug").values() for w in ws}
    assert used == _node_ids(cluster)


@contextlib.contextmanager
def _only_free_cpu_on(cluster, keep):
    """Every other node's CPU held by an idle actor pinned there, so that trials can only be placed
    on ``keep``: which node Tune picks is otherwise Ray's choice, and a quick sweep with two trials
    at a time may never need a third node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=1)
    class Hold:
        def ready(self) -> bool:
            return True

    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        others = [n for n in [cluster.head_node, *cluster.worker_nodes] if n.node_id != keep.node_id]
        holds = [Hold.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)).remote()
                 for n in others]
        ray.get([h.ready.remote() for h in holds], timeout=120)
        yield
        for h in holds:
            ray.kill(h)
    finally:
        ray.shutdown()


def test_a_node_with_foreign_code_never_trains_and_another_timm_is_refused(cluster, tmp_path):
    """A third node whose workers' path holds a planted raypair/ (it records that it was imported,
    then fails): the driver ships its own raypair, so trials run there with the driver's code (its
    source hash on every run) and the planted one is never imported. Then the same node shows
    another timm version (a dist-info first on its path): the next sweep is refused in one line
    naming the node and both versions, exit 2, before any trial."""
    from raypair.trials import provenance

    foreign = tmp_path / "foreign"
    (foreign / "raypair").mkdir(parents=True)
    (foreign / "raypair" / "__init__.py").write_text(f"open({str(foreign / 'IMPORTED')!r}, 'w').close()\n"
                                                     "raise ImportError('the planted raypair')\n")
    node = cluster.add_node(num_cpus=1, env_vars={"PYTHONPATH": str(foreign)})
    cluster.wait_for_nodes()
    storage = tmp_path / "runs"
    args = ["tune", str(QUICK), "--address", cluster.address, "--storage", str(storage), "--set", "epochs=1"]
    try:
        with _only_free_cpu_on(cluster, node):  # else Tune may place every trial on the first two nodes
            out = _raypair([*args, "--name", "shipped", "--num-samples", "3"])
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        used = {w["node_id"] for ws in _workers(storage / "shipped").values() for w in ws}
        assert used == {node.node_id}, "every trial ran on the node with the planted raypair"
        assert not (foreign / "IMPORTED").exists(), "a worker imported the planted raypair"
        runs = mlflow_children(storage, "shipped")
        assert len(runs) == 3 and {r.data.tags["raypair.source_hash"] for r in runs} == {provenance.source_hash()}

        dist = foreign / "timm-0.0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: timm\nVersion: 0.0.1\n")
        out = _raypair([*args, "--name", "refused", "--num-samples", "1"])
        assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
        # Ray forwards the workers' own output to stderr too, and may do so after raypair's line
        (line,) = [ln for ln in out.stderr.splitlines() if ln.startswith("raypair:")]
        assert line.startswith("raypair: error: versions.timm") and "timm 0.0.1" in line, out.stderr[-2000:]
        assert provenance.versions()["timm"] in line and node.node_id[:8] in line
        assert not (storage / "refused" / "trials").exists() or not any((storage / "refused" / "trials").iterdir())
    finally:
        cluster.remove_node(node)


def test_a_streamed_dataset_on_both_nodes_each_image_once_per_epoch(cluster, tmp_path):
    """A generated dataset read by the stream path, one Train worker on each node (2 workers x 1
    CPU on nodes of 1 CPU): each worker decodes its own part of every global batch, and across the
    two nodes every training image is seen once per epoch, in the stream path's planned order."""
    from helpers import stream_dataset

    from raypair.config import DataConfig
    from raypair.data.sources import resolve
    from raypair.data.stream import StreamLoader
    from raypair.data.stream_index import index_splits

    root = stream_dataset(tmp_path / "data", "parquet", 40, 8, size=(40, 36)).parent
    trace, storage = tmp_path / "trace", tmp_path / "runs"
    data = {"name": "parquet", "root": str(root), "pipeline": "imagenet", "crop_size": 24, "resize_size": 28,
            "mode": "stream", "workers": 0, "trace": str(trace)}
    spec = {"name": "streamed", "run": {"data": data, "model": {"name": "tiny_cnn"}, "method": {"name": "erm"},
                                        "epochs": 2, "batch_size": 16, "eval_batch_size": 8,
                                        "scale": {"workers": 2, "trainer": "train"}},
            "space": {"optim.lr": {"choice": [0.05]}}, "tune": {"num_samples": 1, "scheduler": {"name": "none"}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    out = _raypair(["tune", str(tmp_path / "s.yaml"), "--address", cluster.address, "--storage", str(storage)])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (ws,) = _workers(storage / "streamed").values()
    assert {w["node_id"] for w in ws} == _node_ids(cluster) and sorted(w["rank"] for w in ws) == [0, 1]
    tr, _ = index_splits(resolve(DataConfig(**data)))
    for epoch in range(2):
        seen = []
        for rank in range(2):
            rows = [[int(r) for r in ln.split()] for ln in (trace / f"train-e{epoch}-r{rank}.txt").read_text().splitlines()]
            plan = StreamLoader(tr, batch_size=16, mean=(0,) * 3, std=(1,) * 3, train=True, rank=rank, world_size=2)
            assert rows == [b.tolist() for b in plan.batches(epoch)]
            seen += [r for b in rows for r in b]
        assert len(seen) == 32 and len(set(seen)) == 32 and set(seen) <= set(range(40))  # 2 global batches of 16


def test_a_node_removed_mid_sweep_its_trials_retry_elsewhere_from_their_checkpoints(cluster, tmp_path):
    """A third node joins; once a trial on it has checkpointed an epoch or two, the node is
    removed (all its processes killed). Tune retries that trial (``tune.max_failures: 1``) on the
    nodes left, from its last checkpoint in the shared store: one MLflow run, each epoch once."""
    doomed = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    space = yaml.safe_load(QUICK.read_text())
    space["name"] = "node_loss"
    space["run"]["epochs"] = 12
    space["run"]["data"]["image_size"] = 24  # slow enough to catch a trial mid-way
    space["tune"].update(num_samples=3, max_concurrent_trials=3, max_failures=1, scheduler={"name": "none"},
                         searcher={"name": "random", "seed": 0})
    path = tmp_path / "node_loss.yaml"
    path.write_text(yaml.safe_dump(space))
    storage = tmp_path / "runs"
    exp_dir = storage / "node_loss"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "raypair", "tune", str(path), "--address", cluster.address,
                             "--storage", str(storage)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    victim = None
    try:
        deadline = time.time() + 300
        while victim is None and time.time() < deadline and proc.poll() is None:
            for key, ws in _workers(exp_dir).items():
                hist = exp_dir / "trials" / key / "history.jsonl"
                lines = hist.read_text().splitlines() if hist.exists() else []
                # 3 lines: epoch 2's checkpoint is written (a history line precedes its checkpoint)
                if any(w["node_id"] == doomed.node_id for w in ws) and 3 <= len(lines) < 10:
                    victim = key
            time.sleep(0.2)
        assert victim is not None, "no trial ran on the third node"
        cluster.remove_node(doomed)
        stdout, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert proc.returncode == 0, stdout[-4000:]
    ws = _workers(exp_dir)[victim]
    firsts = [w for w in ws if w["rank"] == 0]
    assert len(firsts) == 2, ws  # the attempt on the removed node, and the retry
    assert firsts[0]["node_id"] == doomed.node_id and firsts[1]["node_id"] != doomed.node_id
    assert firsts[1]["from_epoch"] >= 2, "the retry continued from the checkpoint"
    history = [json.loads(line) for line in (exp_dir / "trials" / victim / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, 13)), "every epoch once in the store"
    children = mlflow_children(storage, "node_loss")
    assert len(children) == 3, "one MLflow run per trial, the retried one included"
    assert all(r.info.status == "FINISHED" for r in children)
    run = next(r for r in children if r.data.tags["raypair.trial_id"] == victim)
    assert run.data.tags["raypair.retries"] == "1" and run.data.tags["raypair.attempts"] == "2"
    assert _metric_steps(storage, run.info.run_id, "val_acc") == list(range(1, 13)), "no epoch logged twice"


def test_a_local_sweeps_ray_listens_on_loopback_only(tmp_path):
    """The Ray a local sweep starts binds 127.0.0.1: no port of it is reachable from the network."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import json, os, ray\n"
        "import psutil  # the test extra declares it\n"
        "from raypair.runner.cluster import start_ray\n"
        "start_ray(None)\n"
        "ray.get(ray.remote(lambda: 1).remote())\n"
        "sess = os.path.basename(ray._private.worker._global_node.get_session_dir_path())\n"
        "pids = {os.getpid()} | {c.pid for c in psutil.Process().children(recursive=True)}\n"
        "for p in psutil.process_iter(['pid', 'cmdline']):\n"
        "    if any(sess in a for a in (p.info['cmdline'] or [])):\n"
        "        pids.add(p.pid)\n"
        "print(json.dumps(sorted({c.laddr.ip for c in psutil.net_connections('tcp')\n"
        "                         if c.status == 'LISTEN' and c.pid in pids})))\n"
        "print(len([c for c in psutil.net_connections('tcp') if c.status == 'LISTEN' and c.pid in pids]))\n"
        "ray.shutdown()\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ips_line, count_line = out.stdout.strip().splitlines()[-2:]
    ips = json.loads(ips_line)
    assert int(count_line) >= 5, "found Ray's listening ports (GCS, raylet, workers, dashboard...)"
    assert ips and all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip in ips), ips


def test_an_address_where_no_ray_listens_is_one_line_at_once(tmp_path):
    """Ray itself retries such an address for minutes; raypair says so in one line (exit 2)."""
    port = free_port()
    out = _raypair(["tune", str(QUICK), "--address", f"127.0.0.1:{port}", "--storage", str(tmp_path / "runs")],
                   timeout=120)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raypair: error: --address: no Ray at"), lines
    assert f"127.0.0.1:{port}" in lines[0]
    client = _raypair(["tune", str(QUICK), "--address", "ray://127.0.0.1:10001", "--storage", str(tmp_path / "r")],
                      timeout=120)
    assert client.returncode == 2 and "Ray Client addresses are not supported" in client.stderr
