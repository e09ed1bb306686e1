"""Run in its own process by test_cuda_sim.py: NUMBA_ENABLE_CUDASIM=1 is set
before numba is imported. Compares the CUDA kernels (simulated, tiny blocks so
partial blocks and grid-stride loops occur) with the CPU engine."""

import json
import os
import sys

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from gpucurate.columns import buffers  # noqa: E402
from gpucurate.engine import CpuEngine  # noqa: E402
from gpucurate.gpu import GpuEngine  # noqa: E402
from gpucurate.kernels.cpu import count_entries as cpu_count, keep_range  # noqa: E402
from gpucurate.tables import load_tables, load_tables_ww  # noqa: E402


def check(entries, texts, label, worldwide=False):
    tables = (load_tables_ww if worldwide else load_tables)(entries, cache=False)
    cpu = CpuEngine(tables, threads=1)
    gpu = GpuEngine(tables, block=8, max_blocks=3)
    tb = buffers(pa.array(texts, pa.large_string()))
    c_off, c_ids = cpu.match(tb)
    g_off, g_ids = gpu.match(tb)
    assert np.array_equal(c_off, g_off), label
    assert np.array_equal(c_ids, g_ids), label
    # every launch form gives the same CSR: one walk with few slots (most rows
    # overflow and are walked again), with no overflow, or the two-pass form;
    # rows in file order or sorted by length
    dev = gpu.upload(tb)
    for slots in (0, 1, 2, 64):
        for by_length in (False, True):
            s_off, s_ids = (gpu.to_host(x) for x in
                            gpu.match_device(*dev, by_length=by_length, slots=slots))
            assert np.array_equal(c_off, s_off) and np.array_equal(c_ids, s_ids), \
                f"{label}: slots={slots} by_length={by_length}"
    # counting with atomics into one uint64 array, twice (accumulates)
    counts = np.zeros(len(entries), np.uint64)
    gpu.count_into(g_ids, counts)
    gpu.count_into(g_ids, counts)
    want = np.zeros(len(entries), np.uint64)
    cpu_count(c_ids, want)
    cpu_count(c_ids, want)
    assert np.array_equal(counts, want), label
    # balancing: the pinned draw on the device equals the CPU's
    prob = np.minimum(1.0, 3.0 / np.maximum(want.astype(np.float64), 1.0))
    keys = np.arange(len(texts), dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    keep_c = np.zeros(len(texts), np.uint8)
    keep_range(c_ids, c_off, keys, prob, np.uint64(7), keep_c)
    keep_g = gpu.keep(g_ids, g_off, keys, prob, 7)
    assert np.array_equal(keep_c, keep_g), label
    # pass 1 of device-resident buffers (what the cuDF reader feeds): same counts,
    # same lists as the CPU engine
    from gpucurate.pipeline import count_device_batch

    dev_counts = np.zeros(len(entries), np.uint64)
    r = count_device_batch(gpu, *gpu.upload(tb), dev_counts, 1000, label, save_matches=True)
    half = np.zeros(len(entries), np.uint64)
    cpu_count(c_ids, half)
    assert np.array_equal(dev_counts, half), label
    lens = np.diff(c_off)
    assert r["captions"] == len(texts) and r["nulls"] == sum(t is None for t in texts), label
    assert r["matched"] == int(np.count_nonzero(lens)), label
    assert np.array_equal(r["entry_id"], c_ids.astype(np.uint32)), label
    assert np.array_equal(r["lens"], lens), label
    return int(c_ids.size)


def check_device_utf8():
    """The device UTF-8 check names the first bad row of a batch, as the host's does."""
    from gpucurate.columns import TextBuffers, check_utf8
    from gpucurate.pipeline import count_device_batch
    from gpucurate.errors import InputError

    rows = [b"ok", b"caf\xc3\xa9", None, b"\xff bad", b"\xe0\x80\x80", b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80", b"x\xc3", "日本".encode()]
    for bad_at in ([], [3], [4], [5], [6], [7]):
        keep = [r for i, r in enumerate(rows) if r is None or i not in (3, 4, 5, 6, 7)
                or i in bad_at]
        arr = pa.array(keep, pa.large_binary())
        b = arr.buffers()
        n = len(arr)
        tb = TextBuffers(np.frombuffer(b[2], np.uint8), np.frombuffer(b[1], np.int64)[: n + 1],
                         np.array([r is not None for r in keep], np.uint8))
        tables = load_tables(["ok"], cache=False)
        gpu = GpuEngine(tables, block=4, max_blocks=2)
        host_err = dev_err = None
        try:
            check_utf8(tb, "batch", 10)
        except InputError as e:
            host_err = str(e).split(" (")[0]
        try:
            count_device_batch(gpu, *gpu.upload(tb), np.zeros(1, np.uint64), 10, "batch")
        except InputError as e:
            dev_err = str(e).split(";")[0]
        assert (host_err is None) == (not bad_at), (bad_at, host_err)
        assert host_err == dev_err, (host_err, dev_err)


def check_pipeline(meta_path, captions_path, tmp):
    """curate --device gpu (simulated kernels) == curate --device cpu, byte for byte."""
    import glob
    import tempfile

    from gpucurate.pipeline import curate

    outs = {}
    for dev in ("cpu", "gpu"):
        out = os.path.join(tmp, dev)
        s = curate(meta_path, [captions_path], out, t=3, seed=5, device=dev, report=False,
                   batch_bytes=4000)
        assert s["device"] == dev, s["device"]
        outs[dev] = out
    for rel in ["entry_counts.parquet"] + [os.path.relpath(p, outs["cpu"]) for p in
                                           glob.glob(os.path.join(outs["cpu"], "curated", "*"))]:
        a = pq.read_table(os.path.join(outs["cpu"], rel))
        b = pq.read_table(os.path.join(outs["gpu"], rel))
        assert a.equals(b), rel
    return tempfile


def main():
    np.seterr(over="ignore")  # uint64 hashes wrap by design; the simulator runs them in NumPy
    meta_path, captions_path = sys.argv[1], sys.argv[2]
    entries = json.load(open(meta_path))
    texts = pq.read_table(captions_path).column("text").to_pylist()
    n = check(entries, texts, "real")
    adversarial_entries = ["a", "a b", "a b c", ",", "a ,", "!", "a  b", " a", "a ", "猫", "u.s",
                           "b", "a"]
    adversarial = ["a b c", "a,b", "a  b", " a", "a ", "", None, "a\tb\nc\rd", "猫 猫 a",
                   "!!", "u.s", "a b c " * 40, "a" * 50, "\u00a0a\u00a0", "a,,a"]
    check(adversarial_entries, adversarial, "adversarial")
    check(adversarial_entries + ["(猫)", "日本の", "の", "可爱", "ไมเคิล"],
          adversarial + ["我的猫很可爱 日本の (猫)", "\u3000の\u3000", "ไมเคิลพูพาร์ท"],
          "adversarial worldwide", worldwide=True)
    check_pipeline(meta_path, captions_path, sys.argv[3])
    check_device_utf8()
    assert n > len(texts), "too few matches to mean anything"
    print(f"SIM OK {len(texts)} captions, {n} ids")


if __name__ == "__main__":
    main()
