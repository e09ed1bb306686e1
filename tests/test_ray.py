"""The Ray executor on a real private local Ray (CPU): same outputs as the local
executor, also when a worker process is killed mid-run."""

import glob
import os
import signal
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import caption_file

pytest.importorskip("ray", reason="needs the ray extra: pip install -e '.[ray]'")

from gpucurate.cli import main  # noqa: E402
from gpucurate.config import CurateConfig  # noqa: E402
from gpucurate.pipeline import run  # noqa: E402

SOURCES = [("coco_captions_val2017", 1500), ("flickr8k", 1500), ("redcaps_explore_samples", 1000)]


def _pool(dirpath, n_shards):
    texts = []
    for name, n in SOURCES:
        texts += pq.read_table(caption_file(name), columns=["text"]).column("text").to_pylist()[:n]
    t = pa.table({"id": pa.array(np.arange(len(texts), dtype=np.int64) * 7 + 3),
                  "text": pa.array(texts, pa.large_string())})
    os.makedirs(dirpath)
    step = -(-t.num_rows // n_shards)
    for i in range(n_shards):
        pq.write_table(t.slice(i * step, step), os.path.join(dirpath, f"shard-{i:02d}.parquet"))
    return dirpath


def _args(metadata, pool, out, *extra):
    return ["curate", "--metadata", str(metadata), "--input", pool, "--out", out, "--t", "3",
            "--key-column", "id", "--device", "cpu", "--threads", "1", "--no-report",
            "--quiet", *extra]


def _files(out):
    return sorted(os.path.relpath(p, out) for p in glob.glob(os.path.join(out, "**", "*"),
                                                             recursive=True)
                  if os.path.isfile(p))


def _same_outputs(a, b):
    fa, fb = _files(a), _files(b)
    assert fa == fb  # no missing, extra, duplicate or temporary file
    assert not [f for f in fb if ".tmp-" in f]
    parts = [f for f in fa if f.startswith("curated" + os.sep)]
    assert parts
    for rel in ["entry_counts.parquet", *parts]:
        ta, tb = pq.read_table(os.path.join(a, rel)), pq.read_table(os.path.join(b, rel))
        assert ta.num_rows == tb.num_rows, rel
        assert ta.equals(tb), rel  # same rows, order and values


@pytest.fixture(scope="module")
def pools(tmp_path_factory, metadata_path):
    root = tmp_path_factory.mktemp("raypool")
    small = _pool(str(root / "small"), 4)
    many = _pool(str(root / "many"), 24)
    outs = {}
    for name, pool in (("small", small), ("many", many)):
        out = str(root / f"local-{name}")
        assert main(_args(metadata_path, pool, out)) == 0
        outs[name] = (pool, out)
    return root, outs


def test_ray_executor_same_outputs_as_local(pools, metadata_path):
    root, outs = pools
    pool, local = outs["small"]
    out = str(root / "ray-small")
    assert main(_args(metadata_path, pool, out, "--executor", "ray")) == 0
    _same_outputs(local, out)
    import json

    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["executor"] == "ray"


def _ppid(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


def _ours(pid):
    """Whether pid descends from this process (our private Ray), not from
    another run on the same machine."""
    me = os.getpid()
    try:
        while pid > 1:
            pid = _ppid(pid)
            if pid == me:
                return True
    except (OSError, IndexError, ValueError):
        pass
    return False


def test_ray_missing_names_the_extra(monkeypatch, tmp_path):
    import sys

    from gpucurate.errors import ConfigError
    from gpucurate.executors.ray import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    cfg = CurateConfig(metadata=["a"], inputs=("x",), out=str(tmp_path), executor="ray")
    with pytest.raises(ConfigError, match=r"pip install gpucurate\[ray\]"):
        RayExecutor(cfg)


def test_ray_missing_is_said_before_dir_is_written(monkeypatch, tmp_path):
    import sys

    from gpucurate.errors import ConfigError
    from gpucurate.pipeline import run

    pq_path = tmp_path / "a.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a dog"]}), pq_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    cfg = CurateConfig(metadata=["dog"], inputs=(str(pq_path),), out=str(tmp_path / "o"), t=1,
                       executor="ray", device="cpu", report=False)
    with pytest.raises(ConfigError, match=r"pip install gpucurate\[ray\]"):
        run(cfg)
    assert not os.path.exists(tmp_path / "o" / "config.json")


def test_ray_threads_past_any_node_are_refused(pools, metadata_path):
    """--threads more than the largest node has: no worker could ever be
    placed; an error saying so at once (it waited for the scheduling
    timeout, then said to rerun)."""
    root, outs = pools
    pool, _ = outs["small"]
    args = _args(metadata_path, pool, str(root / "ray-threads"), "--executor", "ray",
                 "--threads", str((os.cpu_count() or 2) * 64))
    assert main(args) == 2


def test_ray_input_error_reaches_the_caller(pools, metadata_path):
    """An error raised in a worker (here: no such key column) surfaces as
    gpucurate's own error, exit code 2, as with the local executor."""
    root, outs = pools
    pool, _ = outs["small"]
    args = _args(metadata_path, pool, str(root / "ray-badkey"), "--executor", "ray")
    args[args.index("id")] = "no_such_column"
    assert main(args) == 2


def _shard_worker_pids():
    """PIDs of this test's Ray actor processes running a shard right now (the
    process title is ``ray::_ShardWorker.run`` while a call runs)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if cmd.startswith(b"ray::_ShardWorker.run") and _ours(int(d)):
            pids.append(int(d))
    return pids


def _sigkill(pid: int) -> bool:
    """SIGKILL ``pid``; False when it is gone already."""
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


def test_ray_worker_killed_mid_run(pools, metadata_path):
    """SIGKILL a worker process while it runs a shard, once in pass 1 and once in
    pass 2: the run completes (the shard is rerun) and the outputs are identical."""
    if not os.path.isdir("/proc"):
        pytest.skip("needs /proc to find the worker processes")
    root, outs = pools
    pool, local = outs["many"]
    out = str(root / "ray-killed")
    killed = []
    done = threading.Event()

    def killer():
        for marker_dir in ("work/pass1", "stats"):
            # Wait until the pass has finished a shard (the workers are up), then
            # kill a worker caught running the next one.
            while not done.is_set() and not glob.glob(os.path.join(out, marker_dir, "*.json")):
                time.sleep(0.005)
            while not done.is_set():
                pids = _shard_worker_pids()
                if pids and _sigkill(pids[0]):
                    killed.append((marker_dir, len(glob.glob(os.path.join(
                        out, marker_dir, "*.json")))))
                    break
                time.sleep(0.002)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    try:
        # Small batches make each shard take long enough for the kill to land in it.
        cfg = CurateConfig(metadata=str(metadata_path), inputs=(pool,), out=out, t=3,
                           key_column="id", device="cpu", threads=1, report=False,
                           executor="ray", batch_bytes=2048)
        s = run(cfg)
    finally:
        done.set()
        th.join(10)
    # One kill in each pass, while that pass still had shards to finish.
    assert [k[0] for k in killed] == ["work/pass1", "stats"], killed
    assert all(n < 24 for _, n in killed), killed
    assert s["executor"] == "ray" and s["shards"] == 24
    _same_outputs(local, out)


def _tar_pool(src, captions: str, per_tar: int, image_bytes, seed: int):
    """Three tars of real captions (.txt) with images of random bytes (.jpg)."""
    import io
    import tarfile

    texts = pq.read_table(caption_file(captions), columns=["text"]).column("text").to_pylist()
    os.makedirs(src)
    rng = np.random.default_rng(seed)
    for k in range(3):
        with tarfile.open(src / f"{k:05d}.tar", "w") as tf:
            for j in range(k * per_tar, (k + 1) * per_tar):
                for ext, blob in (("jpg", rng.integers(0, 256, image_bytes(j), np.uint8).tobytes()),
                                  ("txt", texts[j].encode())):
                    ti = tarfile.TarInfo(f"s{j:06d}.{ext}")
                    ti.size = len(blob)
                    tf.addfile(ti, io.BytesIO(blob))
    return src


def test_ray_webdataset_output_same_as_local(tmp_path, metadata_path):
    """--outputs webdataset from tar shards: pass 1 runs in Ray's workers and
    leaves where each sample lies; the tars written are the local run's."""
    src = _tar_pool(tmp_path / "tars", "coco_captions_val2017", 200, lambda j: 700 + j, 3)
    outs = []
    for ex in ("local", "ray"):
        out = str(tmp_path / ex)
        assert main(["curate", "--metadata", str(metadata_path), "--input", str(src), "--out",
                     out, "--t", "3", "--key-column", "__key__", "--device", "cpu",
                     "--threads", "1", "--no-report", "--quiet", "--executor", ex,
                     "--outputs", "parquet,webdataset", "--samples-per-shard", "70"]) == 0
        assert len(glob.glob(os.path.join(out, "work", "wds", "*.spans.parquet"))) == 3
        outs.append({os.path.basename(p): open(p, "rb").read()
                     for p in glob.glob(os.path.join(out, "curated-wds", "*"))})
    assert outs[0] == outs[1] and len(outs[0]) > 2


def test_ray_worker_killed_while_writing_webdataset(tmp_path, metadata_path):
    """SIGKILL a worker while it writes an output tar: the tar is written again
    by another worker, the temporary file of the lost one is swept, and the
    tars equal a local run's."""
    if not os.path.isdir("/proc"):
        pytest.skip("needs /proc to find the worker processes")
    src = _tar_pool(tmp_path / "tars", "flickr8k", 150, lambda j: 200_000, 5)

    def args(out, ex):
        return ["curate", "--metadata", str(metadata_path), "--input", str(src), "--out", out,
                "--t", "3", "--key-column", "__key__", "--device", "cpu", "--threads", "1",
                "--no-report", "--quiet", "--executor", ex, "--outputs", "webdataset",
                "--samples-per-shard", "10"]

    local = str(tmp_path / "local")
    assert main(args(local, "local")) == 0
    out = str(tmp_path / "ray")
    killed = []
    done = threading.Event()

    def killer():  # the worker whose temporary tar is there (named .tmp-<its pid>)
        wds = os.path.join(out, "curated-wds")
        while not done.is_set():
            for tmp in glob.glob(os.path.join(wds, "*.tar.tmp-*")):
                pid = int(tmp.rsplit("-", 1)[1])
                if pid != os.getpid() and _ours(pid) and _sigkill(pid):
                    killed.append(len(glob.glob(os.path.join(wds, "*.tar"))))
                    return
            time.sleep(0.001)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    try:
        assert main(args(out, "ray")) == 0
    finally:
        done.set()
        th.join(10)
    n_tars = len(glob.glob(os.path.join(local, "curated-wds", "*.tar")))
    assert len(killed) == 1 and killed[0] < n_tars, (killed, n_tars)
    assert [f for f in _files(out) if "curated-wds" in f] == \
        [f for f in _files(local) if "curated-wds" in f]
    assert not [f for f in _files(out) if ".tmp-" in f]  # the lost worker's, swept
    for f in glob.glob(os.path.join(local, "curated-wds", "*")):
        with open(f, "rb") as a, open(os.path.join(out, "curated-wds", os.path.basename(f)),
                                      "rb") as b:
            assert a.read() == b.read(), f


def test_ray_call_that_kills_its_worker_every_time_names_its_shard(pools, metadata_path):
    """A shard whose worker is killed on every try (as a shard that crashes or
    exhausts its process would): after the reruns, the error names the shard's
    file, not a position in a list."""
    import re

    from gpucurate.errors import GpucurateError

    root, outs = pools
    pool, _ = outs["small"]
    out = str(root / "ray-one-kills")
    done = threading.Event()
    killed = []

    def killer():  # every worker caught writing shard 2's temporary files
        pat = re.compile(r"shard-00002.*\.tmp-(\d+)$")
        while not done.is_set():
            for f in glob.glob(os.path.join(out, "**", "*"), recursive=True):
                m = pat.search(f)
                if m and int(m.group(1)) not in killed and int(m.group(1)) != os.getpid() \
                        and _ours(int(m.group(1))) and _sigkill(int(m.group(1))):
                    killed.append(int(m.group(1)))
            time.sleep(0.001)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    cfg = CurateConfig(metadata=str(metadata_path), inputs=(pool,), out=out, t=3,
                       key_column="id", device="cpu", threads=1, report=False, executor="ray",
                       batch_bytes=512, extra={"ray_max_retries": 1})
    try:
        with pytest.raises(GpucurateError, match=re.escape(os.path.join(pool, "shard-02.parquet"))
                           + r" \(pass 1\): its Ray worker was lost 2 times"):
            run(cfg)
    finally:
        done.set()
        th.join(10)
    assert len(killed) == 2


def test_ray_workers_dying_as_they_start_end_in_an_error(pools, metadata_path, tmp_path):
    """Every worker killed while it builds its engine (a node short of memory):
    the run ends in an error saying so, not in a loop of new workers."""
    import subprocess
    import sys

    from conftest import ROOT

    root, outs = pools
    pool, _ = outs["small"]
    code = f"""
import os, signal, threading
from gpucurate.config import CurateConfig
from gpucurate.errors import GpucurateError
from gpucurate.pipeline import run

def ours(pid):
    me = os.getpid()
    try:
        while pid > 1:
            with open(f"/proc/{{pid}}/stat", "rb") as f:
                pid = int(f.read().rsplit(b")", 1)[1].split()[1])
            if pid == me:
                return True
    except (OSError, IndexError, ValueError):
        pass
    return False

def killer():
    while True:
        for d in os.listdir("/proc"):
            try:
                cmd = open(f"/proc/{{d}}/cmdline", "rb").read() if d.isdigit() else b""
            except OSError:
                continue
            if cmd.startswith(b"ray::_ShardWorker.info") and ours(int(d)):
                try:
                    os.kill(int(d), signal.SIGKILL)
                except ProcessLookupError:
                    pass

threading.Thread(target=killer, daemon=True).start()
cfg = CurateConfig(metadata={str(metadata_path)!r}, inputs=({pool!r},), out={str(tmp_path / "o")!r},
                   t=3, key_column="id", device="cpu", threads=1, report=False, executor="ray",
                   extra={{"ray_max_retries": 1, "ray_schedule_timeout_s": 30}})
try:
    run(cfg)
    print("finished")
except GpucurateError as exc:
    print("error:", str(exc).splitlines()[0])
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=240)
    assert "error: Ray workers died while starting" in r.stdout, (r.stdout, r.stderr[-2000:])


def test_ray_leaves_the_callers_session_as_it_was_after_an_error(tmp_path, metadata_path):
    """The Python API in the caller's own Ray session: a run that raises (bad
    input in one shard) leaves no actor holding the session's CPUs, and no
    temporary file of a shard that was in flight."""
    import ray

    from gpucurate.errors import InputError

    os.makedirs(tmp_path / "in")
    for i in range(4):
        with open(tmp_path / "in" / f"s{i}.jsonl", "w") as f:
            if i == 1:
                f.write("not json\n")
            f.writelines('{"text": "a dog %d"}\n' % j for j in range(3000))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        cfg = CurateConfig(metadata=str(metadata_path), inputs=(str(tmp_path / "in"),),
                           out=str(tmp_path / "o"), t=3, device="cpu", threads=1, report=False,
                           executor="ray", batch_bytes=256)
        with pytest.raises(InputError, match="s1.jsonl"):
            run(cfg)
        # the other worker's shard was in flight: its temporary files are swept
        assert not [f for f in glob.glob(str(tmp_path / "o" / "**"), recursive=True)
                    if ".tmp-" in f]
        deadline = time.monotonic() + 20
        while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0) == 2
    finally:
        ray.shutdown()


def test_ray_threads_default_to_the_environment(pools, metadata_path, monkeypatch, capsys):
    """--threads left out: each Ray worker takes $GPUCURATE_THREADS threads
    (here every CPU: one worker), as the local executor does."""
    root, outs = pools
    pool, local = outs["small"]
    cpus = os.cpu_count() or 1
    monkeypatch.setenv("GPUCURATE_THREADS", str(cpus))
    cfg = CurateConfig(metadata=str(metadata_path), inputs=(pool,), out=str(root / "ray-env"),
                       t=3, key_column="id", device="cpu", report=False, executor="ray")
    from gpucurate.log import configure

    configure()  # the Python API logs only when asked
    run(cfg)
    assert "ray: 1 workers asked for" in capsys.readouterr().err
    _same_outputs(local, str(root / "ray-env"))


def test_ray_address_where_nothing_listens_is_an_error_at_once(tmp_path, metadata_path):
    """--address HOST:PORT with nothing listening: an error naming the
    address, not Ray's silent retries for minutes."""
    import socket

    from gpucurate.errors import ConfigError

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # a port nothing listens on
    pq.write_table(pa.table({"text": ["a dog"]}), tmp_path / "a.parquet")
    cfg = CurateConfig(metadata=str(metadata_path), inputs=(str(tmp_path / "a.parquet"),),
                       out=str(tmp_path / "o"), t=1, device="cpu", report=False,
                       executor="ray", address=f"127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=f"--address 127.0.0.1:{port}: nothing answers"):
        run(cfg)
    assert time.monotonic() - t0 < 30


def test_ray_keeps_the_command_lines_sigterm(tmp_path, metadata_path):
    """ray.init installs its own SIGTERM handler (sys.exit(15)): a SIGTERM to a
    --executor ray run then exited 15 without a word. The executor keeps the
    command line's, which stops the run with its message and status 143; a
    caller without a handler of its own keeps Ray's (its clean-up runs)."""
    import subprocess
    import sys

    code = (
        "import os, signal, sys, time\n"
        "from gpucurate.cli.main import Terminated, _on_sigterm\n"
        "from gpucurate.config import CurateConfig\n"
        "from gpucurate.executors.ray import RayExecutor\n"
        "cfg = CurateConfig(metadata=sys.argv[1], inputs=('x.parquet',), out=sys.argv[2], "
        "executor='ray', device='cpu')\n"
        "ex = RayExecutor(cfg)\n"  # no handler of the caller's: Ray's own (its clean-up) stays
        "print('ray handler', callable(signal.getsignal(signal.SIGTERM)))\n"
        "ex.close()\n"
        "signal.signal(signal.SIGTERM, _on_sigterm)\n"
        "ex = RayExecutor(cfg)\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(10)\n"
        "    print('not stopped')\n"
        "except Terminated:\n"
        "    print('terminated')\n"
        "finally:\n"
        "    ex.close()\n")
    r = subprocess.run([sys.executable, "-c", code, str(metadata_path), str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=240, cwd=str(tmp_path))
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "terminated", \
        (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "ray handler True" in r.stdout


def test_ray_raises_the_first_failure_in_call_order(tmp_path, metadata_path):
    """Two shards fail: the first's error is raised whatever ends first (Ray
    raised the first to arrive: the later shard's, whose bad line comes
    first), as the local executor does."""
    from gpucurate.errors import InputError

    d = tmp_path / "in"
    d.mkdir()
    texts = pq.read_table(caption_file("redcaps_explore_samples"),
                          columns=["text"]).column("text").to_pylist()[:300000]
    import json

    with open(d / "a.jsonl", "w") as f:  # shard 0: its bad line at its end
        f.writelines(json.dumps({"text": x}) + "\n" for x in texts)
        f.write("not json in a\n")
    (d / "b.jsonl").write_text("not json in b\n" + json.dumps({"text": "a dog"}) + "\n")
    for ex in ("local", "ray"):
        cfg = CurateConfig(metadata=str(metadata_path), inputs=(str(d),),
                           out=str(tmp_path / ex), t=3, device="cpu", threads=1, executor=ex,
                           report=False, extra={"ray_workers": 2} if ex == "ray" else {})
        with pytest.raises(InputError, match="a.jsonl: line 300001"):
            run(cfg)


def test_ray_auth_advice_says_the_mode_when_a_token_is_at_hand(monkeypatch, tmp_path):
    """With ~/.ray/auth_token present but RAY_AUTH_MODE unset, Ray 2.60's
    driver sends no token: the advice is to set the mode (it said the token
    was the wrong one); with the mode set, a refusal is the token's."""
    from gpucurate.executors.ray import auth_failure

    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    refused = RuntimeError("Failed to connect: UNAUTHENTICATED")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")
    why = auth_failure(refused, None)
    assert "RAY_AUTH_MODE=unset" in why and "set RAY_AUTH_MODE=token" in why
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    assert "ray get-auth-token" in auth_failure(refused, None)  # and where to find one
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")
    assert "refuses this driver's token" in auth_failure(refused, None)


def test_ray_fleet_reruns_lost_calls_in_call_order_after_a_failure():
    """The fleet's order of calls, driven by a scripted stand-in for Ray (a
    node's loss at a chosen moment cannot be had from a real cluster on
    demand): calls 0 and 3 lose their workers, their new workers are slow to
    come, then call 2 fails. The reruns go out lowest call first and call 2's
    error is raised (the queue read [3, 0, ...] and the run waited for ever)."""
    import contextlib
    import types

    from gpucurate.executors import ray as R

    class RayActorError(Exception):
        pass

    class Ref:
        def __init__(self, kind, call=None):
            self.kind, self.call = kind, call

    pending = []

    class Method:
        def __init__(self, kind):
            self.kind = kind

        def remote(self, *a):
            pending.append(Ref(self.kind, a[1] if self.kind == "run" else None))
            return pending[-1]

    class Actor:
        def __init__(self):
            self.run, self.ping, self.info = Method("run"), Method("ping"), Method("info")

    events = [(0, "lost"), (3, "lost"), (2, "fail"), (1, "ok")]
    fresh = {"ready": True}  # the first four workers start; their replacements never do

    def wait(refs, num_returns=1, timeout=None):
        live = [r for r in refs if r in pending and (r.kind == "run" or fresh["ready"])]
        for c, _ in events:  # the scripted calls end first, in the script's order
            for r in live:
                if r.kind == "run" and r.call == c:
                    return [r], []
        if live:
            return [live[0]], []
        time.sleep(0.01)
        return [], refs

    def get(r):
        pending.remove(r)
        if r.kind == "run":
            for k, (c, what) in enumerate(events):
                if c == r.call:
                    del events[k]
                    if what == "lost":
                        raise RayActorError("node died")
                    if what == "fail":
                        raise ValueError(f"bad row in call {c}")
            return r.call
        return {"node": "n"} if r.kind == "info" else None

    ray = types.SimpleNamespace(wait=wait, get=get, kill=lambda a, no_restart=True: None,
                                exceptions=types.SimpleNamespace(RayActorError=RayActorError,
                                                                 RayTaskError=RuntimeError))
    fleet = R._Fleet(ray, Actor, n=4, max_retries=3, schedule_timeout=5)
    fleet.fill()
    while len(fleet.idle) < 4:
        (r,), _ = wait([*fleet.scheduling, *fleet.installing])
        if r in fleet.scheduling:
            a = fleet.scheduling.pop(r)
            get(r)
            fleet.installing[a.info.remote()] = a
        else:
            a = fleet.installing.pop(r)
            get(r)
            fleet.idle.append(a)
    fresh["ready"] = False
    got = {}

    def go():
        try:
            got["r"] = fleet.run(lambda w: w, list(range(8)), contextlib.nullcontext)
        except BaseException as exc:  # noqa: BLE001
            got["e"] = exc

    th = threading.Thread(target=go, daemon=True)
    th.start()
    th.join(20)
    assert not th.is_alive(), "the fleet waited for ever"
    assert isinstance(got.get("e"), ValueError) and "call 2" in str(got["e"])
