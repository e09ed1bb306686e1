import hashlib
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# One numba cache for the whole run (and for the subprocesses tests start), so
# that no process recompiles what another already compiled. Numba keys a cached
# function on its own file only, not on the files of the routines it calls, so
# the cache lives under a hash of all the kernel sources.
_src = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((ROOT / "kernels").glob("*.py"))))
os.environ["NUMBA_CACHE_DIR"] = str(pathlib.Path(os.environ.get(
    "NUMBA_CACHE_DIR", ROOT / ".numba_cache")) / _src.hexdigest()[:16])

SHARED = pathlib.Path(os.environ.get("GPUCURATE_SHARED_DATA", ROOT.parent / "shared" / "data"))
CAPTIONS = SHARED / "captions"
METADATA = SHARED / "metaclip_metadata" / "metadata_proxy.json"
CAPTION_FILES = ["coco_captions_val2017", "flickr8k", "html_img_alttext",
                 "redcaps_explore_samples", "multi30k"]


def _need(path):
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set GPUCURATE_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def metadata_path():
    return _need(METADATA)


@pytest.fixture(scope="session")
def metadata_entries(metadata_path):
    import json

    return json.loads(metadata_path.read_text())


@pytest.fixture(scope="session")
def real_matcher(metadata_entries):
    from gpucurate import Matcher

    return Matcher(metadata_entries, device="cpu", threads=2)


@pytest.fixture(scope="session")
def ac_reference(metadata_entries):
    from gpucurate.reference import AhoCorasickReference

    return AhoCorasickReference(metadata_entries)


def caption_file(name):
    return _need(CAPTIONS / f"{name}.parquet")
