"""A run killed between and within shards resumes to identical outputs."""

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from conftest import ROOT, caption_file
from pool import write_parquet_shards
from test_curate import same_outputs


def _cmd(meta, inp, out):
    return [sys.executable, "-m", "gpucurate", "curate", "--metadata", str(meta), "--input",
            str(inp), "--out", str(out), "--t", "200", "--device", "cpu", "--threads", "1",
            "--batch-bytes", "20000", "--quiet", "--no-report"]


def _kill_when(cmd, ready, timeout=120):
    """Start cmd, SIGKILL it as soon as ready() holds; True if it was killed."""
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < timeout:
        if ready():
            p.send_signal(signal.SIGKILL)
            p.wait()
            return True
        time.sleep(0.005)
    p.wait()
    return False


def _count(d, suffix):
    return len([f for f in os.listdir(d) if f.endswith(suffix)]) if os.path.isdir(d) else 0


def _clean_run(tmp_path, metadata_path, name: str):
    """A 160k-caption pool of 6 shards and its clean run: (clean DIR, the DIR
    to stop and resume, the command that curates into it)."""
    table = pq.read_table(caption_file("redcaps_explore_samples")).slice(0, 160000)
    write_parquet_shards(table, tmp_path / "in", 6)
    clean, out = tmp_path / "clean", tmp_path / name
    r = subprocess.run(_cmd(metadata_path, tmp_path / "in", clean), cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return clean, out, _cmd(metadata_path, tmp_path / "in", out)


def test_kill_and_resume(tmp_path, metadata_path):
    clean, out, cmd = _clean_run(tmp_path, metadata_path, "killed")
    pass1, stats = out / "work" / "pass1", out / "stats"
    # 1. killed in pass 1, right after the first shard's marker: inside shard 2
    assert _kill_when(cmd, lambda: _count(pass1, ".json") >= 1)
    assert not (out / "entry_counts.parquet").exists()
    # 2. killed in pass 2, after the first curated shard
    assert _kill_when(cmd, lambda: _count(stats, ".json") >= 1)
    assert _count(stats, ".json") < 6
    # 3. finished by a third run
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    same_outputs(str(clean), str(out))
    leftovers = [f for _, _, fs in os.walk(out) for f in fs if ".tmp-" in f]
    assert not leftovers


def test_sigterm_stops_with_a_message_and_resumes(tmp_path, metadata_path):
    """SIGTERM (a scheduler stopping the job) is unwound as Ctrl-C is: the
    run says it was terminated and how to resume, exits 143, leaves no
    temporary file; the rerun equals a clean run."""
    clean, out, cmd = _clean_run(tmp_path, metadata_path, "termed")
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    t0 = time.time()
    while p.poll() is None and _count(out / "work" / "pass1", ".json") < 1 and \
            time.time() - t0 < 120:
        time.sleep(0.005)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 143, err
    assert "terminated (SIGTERM); rerun the same command to resume" in err
    assert not [f for _, _, fs in os.walk(out) for f in fs if ".tmp-" in f]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    same_outputs(str(clean), str(out))


def test_a_stop_signal_wrapped_by_a_library_is_still_a_stop(tmp_path, metadata_path, capsys,
                                                             monkeypatch):
    """Ctrl-C or SIGTERM lands wherever the main thread is; a library that
    turns it into its own error while handling it (numba's unpickling did)
    still ends the run as a stop (message, exit 143 or 130), not a traceback."""
    import importlib

    cli_main = importlib.import_module("gpucurate.cli.main")

    def raising(a):
        try:
            raise cli_main.Terminated()
        except KeyboardInterrupt as exc:
            raise RuntimeError("a library's own error") from exc

    monkeypatch.setattr(cli_main, "_dispatch", raising)
    assert cli_main.main(["info"]) == 143
    assert "terminated (SIGTERM)" in capsys.readouterr().err

    def plain(a):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli_main, "_dispatch", plain)
    with pytest.raises(RuntimeError):
        cli_main.main(["info"])
