"""The Ray executor when a node dies, and on loopback only.

* Two Ray nodes in a network namespace holding only ``lo`` (tests/raycluster.py);
  node 2 (its raylet and all its processes) is SIGKILLed while one of its
  workers runs a shard, once in pass 1 and once in pass 2. The run exits 0 and
  its outputs equal the local executor's byte for byte.
* The private local Ray (``--executor ray`` without ``--address``): every
  listening socket of the run is on 127.0.0.0/8, and nothing is written to
  ``~/.ray``.
"""

import glob
import os
import subprocess
import sys
import threading
import time

import pytest

from raycluster import NsCluster, descendants, is_loopback, listening_of, skip_reason

pytest.importorskip("ray", reason="needs the ray extra: pip install -e '.[ray]'")

from test_ray import _args, _pool, _same_outputs  # noqa: E402

from gpucurate.cli import main  # noqa: E402
from gpucurate.config import CurateConfig  # noqa: E402
from gpucurate.pipeline import run  # noqa: E402

SHARDS = 16


@pytest.fixture(scope="module")
def faults_pool(tmp_path_factory, metadata_path):
    root = tmp_path_factory.mktemp("rayfaults")
    pool = _pool(str(root / "pool"), SHARDS)
    local = str(root / "local")
    assert main(_args(metadata_path, pool, local)) == 0
    return root, pool, local


@pytest.fixture
def cluster():
    why = skip_reason()
    if why:
        pytest.skip(why)
    c = NsCluster(nodes=2, cpus=1).start()
    try:
        yield c
    finally:
        c.stop()


def _running_on(c: NsCluster, node: int) -> bool:
    """Whether a worker of ``node`` runs a shard now (its title while it does)."""
    for p in c.node_pids(node):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::_ShardWorker.run"):
                    return True
        except OSError:
            pass
    return False


def kill_during(c: NsCluster, out: str, marker_dir: str, done: threading.Event,
                killed: list, raylet_only: bool = False, min_markers: int = 1) -> None:
    """Once the pass has ``min_markers`` shards done, kill node 2 as soon as
    one of its workers runs a shard."""
    mdir = os.path.join(out, marker_dir)
    while not done.is_set() and len(glob.glob(os.path.join(mdir, "*.json"))) < min_markers:
        time.sleep(0.005)
    while not done.is_set():
        n = len(glob.glob(os.path.join(mdir, "*.json")))
        if n >= SHARDS - 2:
            return  # too late in the pass for a kill to land in it: the caller tries again
        if _running_on(c, 1):
            killed.append((marker_dir, n, c.kill_node(1, raylet_only=raylet_only)))
            return
        time.sleep(0.003)


def driver_cmd(metadata, pool, out, address, batch_bytes=2048):
    return [sys.executable, "-m", "gpucurate", *_args(metadata, pool, out)[:-1],
            "--executor", "ray", "--address", address, "--batch-bytes", str(batch_bytes)]


@pytest.mark.parametrize("marker_dir", ["work/pass1", "stats"], ids=["pass1", "pass2"])
def test_node_killed_mid_pass(cluster, faults_pool, metadata_path, marker_dir):
    root, pool, local = faults_pool
    for attempt in range(3):  # a busy machine may finish the pass before a kill lands in it
        out = str(root / f"ray-nodekill-{marker_dir.replace('/', '-')}-{attempt}")
        killed, done = [], threading.Event()
        th = threading.Thread(target=kill_during, args=(cluster, out, marker_dir, done, killed),
                              daemon=True)
        th.start()
        try:
            p = cluster.run(driver_cmd(metadata_path, pool, out, cluster.address),
                            env=cluster.env(GPUCURATE_RAY_SCHEDULE_TIMEOUT="30"),
                            capture_output=True, text=True, timeout=240)
        finally:
            done.set()
            th.join(10)
        assert p.returncode == 0, p.stderr[-4000:]
        if killed:
            break
    assert len(killed) == 1 and killed[0][1] < SHARDS, killed  # mid-pass
    assert "a worker was lost" in p.stderr, p.stderr[-4000:]
    _same_outputs(local, out)
    # Still nothing outside loopback.
    assert all(is_loopback(a) for a, _, _ in cluster.listening())


def test_no_worker_fails_cleanly(cluster, faults_pool, metadata_path):
    """Both nodes' CPUs held by something else: no worker can be scheduled,
    and the run says so after the stated time, with exit 2."""
    root, pool, _ = faults_pool
    out = str(root / "ray-noworker")
    hold = ("import ray,time,sys\nray.init(address=sys.argv[1], logging_level='ERROR')\n"
            "@ray.remote(num_cpus=1)\nclass H:\n    def ok(self): return 1\n"
            "hs=[H.options(lifetime='detached', name=f'h{i}').remote() for i in range(2)]\n"
            "ray.get([h.ok.remote() for h in hs])\n")
    cluster.run([sys.executable, "-c", hold, cluster.address], check=True, capture_output=True,
                timeout=60)
    t0 = time.monotonic()
    p = cluster.run(driver_cmd(metadata_path, pool, out, cluster.address),
                    env=cluster.env(GPUCURATE_RAY_SCHEDULE_TIMEOUT="5"),
                    capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "no worker could be scheduled in 5 s" in p.stderr, p.stderr[-3000:]
    assert time.monotonic() - t0 < 60


def test_join_names_authentication(faults_pool, metadata_path):
    """A cluster with token auth: a driver with the wrong token, or with auth
    off, is told that authentication failed (Ray itself says only "Failed to
    connect"); with the right token it runs."""
    why = skip_reason()
    if why:
        pytest.skip(why)
    root, pool, local = faults_pool
    c = NsCluster(nodes=1, cpus=1, auth_token="a" * 64).start()
    try:
        fast = {"RAY_gcs_server_port_wait_time_s": "3"}  # Ray's join gives up sooner
        wrong = c.env(RAY_AUTH_TOKEN="b" * 64, **fast)
        off = c.env(RAY_AUTH_MODE="disabled", **fast)
        off.pop("RAY_AUTH_TOKEN")
        for i, env in enumerate((wrong, off)):
            p = c.run(driver_cmd(metadata_path, pool, str(root / f"ray-badauth{i}"), c.address),
                      env=env, capture_output=True, text=True, timeout=120)
            assert p.returncode == 2, p.stderr[-3000:]
            assert "authentication failed" in p.stderr, p.stderr[-3000:]
            assert ("has it off" if i else "refuses this driver's token") in p.stderr
        out = str(root / "ray-goodauth")
        p = c.run(driver_cmd(metadata_path, pool, out, c.address, batch_bytes=1 << 20),
                  capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr[-3000:]
        _same_outputs(local, out)
    finally:
        c.stop()


def test_private_ray_listens_on_loopback_only(faults_pool, metadata_path):
    """Every listening socket of a private-local-Ray run (this process, its Ray
    processes and workers), sampled while it runs, is on 127.0.0.0/8."""
    root, pool, local = faults_pool
    if not os.path.isdir("/proc"):
        pytest.skip("needs /proc to list the run's sockets")
    out = str(root / "ray-private")
    home_token = os.path.expanduser("~/.ray/auth_token")
    had_token = os.path.exists(home_token)
    env_before = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    seen, done = set(), threading.Event()

    def sample():
        while not done.is_set():
            seen.update(listening_of(descendants(os.getpid())))
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        cfg = CurateConfig(metadata=str(metadata_path), inputs=(pool,), out=out, t=3,
                           key_column="id", device="cpu", threads=1, report=False,
                           executor="ray")
        run(cfg)
    finally:
        done.set()
        th.join(10)
    _same_outputs(local, out)
    procs = {open(f"/proc/{pid}/comm").read().strip() if os.path.exists(f"/proc/{pid}/comm")
             else str(pid) for _, _, pid in seen}
    assert len({port for _, port, _ in seen}) >= 4, seen  # gcs, raylet, driver, workers
    outside = sorted({(a, port) for a, port, _ in seen if not is_loopback(a)})
    assert not outside, (outside, procs)
    assert os.path.exists(home_token) == had_token  # no token written under ~
    assert {k: os.environ.get(k) for k in env_before} == env_before  # restored


def test_private_ray_prints_no_error_lines(faults_pool, metadata_path, tmp_path):
    """A healthy private-Ray run: no error-level line from Ray, and run-level
    progress lines as a local run has."""
    root, pool, local = faults_pool
    out = str(tmp_path / "out")
    args = _args(metadata_path, pool, out, "--executor", "ray")
    args.remove("--quiet")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
         os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-m", "gpucurate", *args], env=env,
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    errors = [ln for ln in p.stderr.splitlines()
              if " E " in ln[:40] or "ERROR" in ln or "max_restarts > 0" in ln]
    assert not errors, errors
    assert f"pass 1: {SHARDS}/{SHARDS} shards" in p.stderr, p.stderr[-3000:]
    assert f"pass 2: {SHARDS}/{SHARDS} shards" in p.stderr, p.stderr[-3000:]
    _same_outputs(local, out)
