"""A real multi-node Ray cluster on this machine that never leaves loopback.

Ray 2.60's ``ray start --node-ip-address=127.0.0.1`` replaces 127.0.0.1 by the
machine's own network address (``services.resolve_ip_for_localhost``), and a
worker node cannot be told otherwise (the switch that keeps a single node on
loopback, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, also forbids joining a
cluster). So the nodes run inside a fresh network namespace that holds only
``lo``: there, the only address Ray can find is 127.0.0.1, and nothing it opens
is reachable from outside. Needs root and ``ip netns``; :func:`skip_reason`
says why not otherwise.

    with NsCluster(nodes=2) as c:
        c.run([sys.executable, "-m", "gpucurate", ...])   # a driver inside
        c.kill_node(1)                                     # node 2: raylet + workers
        c.listening()                                      # [(addr, port, process)]

Every process of the cluster lives in the namespace, which this helper created
under a unique name, so teardown kills exactly those processes, by PID, then
deletes the namespace and the temporary directories.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
PORT = 6379  # the namespace is fresh: nothing else listens there

# Node death is noticed by the GCS health checks (default about 15 s); faster
# here so that a test sees the cluster shrink within seconds.
FAST_HEALTH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "500",
               "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "4"}


def skip_reason() -> str | None:
    """Why a namespace cluster cannot run here (None: it can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root to create a network namespace (ip netns add)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` for network namespaces"
    if not os.path.exists(RAY):
        return f"needs the `ray` command beside {sys.executable}"
    name = f"gcr-probe-{os.getpid()}-{secrets.token_hex(3)}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _netns_inode(name: str) -> int:
    return os.stat(f"/var/run/netns/{name}").st_ino


def _pids_in_netns(ino: int) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}/ns/net").st_ino == ino:
                    pids.append(int(d))
            except OSError:
                pass
    return pids


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


class NsCluster:
    """``nodes`` Ray nodes (``cpus`` CPUs each) in a network namespace of their own."""

    def __init__(self, nodes: int = 2, cpus: int = 1, auth_token: str | None = None,
                 env: dict | None = None):
        self.nodes, self.cpus = nodes, cpus
        self.name = f"gcr-{os.getpid()}-{secrets.token_hex(3)}"
        self.tmp = tempfile.mkdtemp(prefix="gcr-", dir="/tmp")  # short: socket paths
        self.dirs = [os.path.join(self.tmp, f"n{i}") for i in range(nodes)]
        self.address = f"127.0.0.1:{PORT}"
        self.auth_token = auth_token
        self._ino = None
        self._extra_env = dict(env or {})

    # ------------------------------------------------------------ setup

    def env(self, **more) -> dict:
        """The environment of every process of the cluster and of its drivers."""
        e = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        pp = e.get("PYTHONPATH")
        e["PYTHONPATH"] = ROOT + (os.pathsep + pp if pp else "")
        e.update(FAST_HEALTH)
        e["RAY_USAGE_STATS_ENABLED"] = "0"
        if self.auth_token:
            e.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.auth_token)
        else:
            e["RAY_AUTH_MODE"] = "disabled"
        e.update(self._extra_env)
        e.update(more)
        return e

    def _ns(self, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def start(self) -> "NsCluster":
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self._ino = _netns_inode(self.name)
        try:
            subprocess.run(self._ns(["ip", "link", "set", "lo", "up"]), check=True)
            for i, d in enumerate(self.dirs):
                os.makedirs(d)
                where = ["--head", f"--port={PORT}", "--include-dashboard=false"] if i == 0 \
                    else [f"--address={self.address}"]
                r = subprocess.run(self._ns([RAY, "start", *where, "--node-ip-address=127.0.0.1",
                                             f"--num-cpus={self.cpus}", "--num-gpus=0",
                                             f"--temp-dir={d}", "--disable-usage-stats"]),
                                   env=self.env(), capture_output=True, text=True, timeout=120)
                if r.returncode != 0:
                    raise RuntimeError(f"ray start (node {i + 1}) failed:\n{r.stdout}\n{r.stderr}")
            self._wait_nodes(self.nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_nodes(self, n: int, timeout: float = 60) -> None:
        code = ("import ray,time,sys\nray.init(address=sys.argv[1], logging_level='ERROR')\n"
                "t=time.time()\nwhile sum(x['Alive'] for x in ray.nodes()) < int(sys.argv[2]):\n"
                "    assert time.time()-t < float(sys.argv[3]), ray.nodes()\n    time.sleep(0.2)\n")
        self.run([sys.executable, "-c", code, self.address, str(n), str(timeout)], check=True,
                 capture_output=True, timeout=timeout + 30)

    # ------------------------------------------------------------ use

    def run(self, cmd: list[str], env: dict | None = None, **kw) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the namespace (a driver: it reaches the cluster
        at :attr:`address`)."""
        return subprocess.run(self._ns(cmd), env=env or self.env(), **kw)

    def popen(self, cmd: list[str], env: dict | None = None, **kw) -> subprocess.Popen:
        return subprocess.Popen(self._ns(cmd), env=env or self.env(), **kw)

    def pids(self) -> list[int]:
        """Every process in the namespace (all of them this cluster's or its drivers')."""
        return _pids_in_netns(self._ino) if self._ino is not None else []

    def node_pids(self, i: int) -> list[int]:
        """Node ``i``'s processes (0: the head): those started with its temp
        dir (raylet, log monitor) and all their descendants (agents, workers)."""
        inns = self.pids()
        roots = {p for p in inns if f"{self.dirs[i]}/" in _cmdline(p)}
        parent = {p: _ppid(p) for p in inns}
        out, grew = set(roots), True
        while grew:
            grew = False
            for p, pp in parent.items():
                if pp in out and p not in out:
                    out.add(p)
                    grew = True
        return sorted(out)

    def kill_node(self, i: int, raylet_only: bool = False) -> list[int]:
        """SIGKILL node ``i``: its raylet alone (``raylet_only``; its workers
        then exit on their own) or the raylet with every process of the node."""
        pids = self.node_pids(i)
        if raylet_only:
            pids = [p for p in pids if _cmdline(p).split(" ", 1)[0].endswith("/raylet")]
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def listening(self) -> list[tuple[str, int, str]]:
        """(address, port, process) of every listening TCP socket in the namespace."""
        r = self.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True)
        return parse_ss(r.stdout)

    # ------------------------------------------------------------ teardown

    def stop(self) -> None:
        if self._ino is not None:
            for _ in range(50):
                pids = [p for p in self.pids() if p != os.getpid()]
                if not pids:
                    break
                for p in pids:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
            self._ino = None
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "NsCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_ss(text: str) -> list[tuple[str, int, str]]:
    """``ss -ltnpH`` lines as (address, port, process name)."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 4:
            continue
        local = f[3]
        addr, _, port = local.rpartition(":")
        addr = addr.strip("[]")
        if addr.startswith("::ffff:"):
            addr = addr[7:]
        proc = line.split('(("', 1)[1].split('"', 1)[0] if '(("' in line else "?"
        out.append((addr, int(port), proc))
    return out


def is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr == "::1"


# ------------------------------------------------- sockets of given processes


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (by parent PID, from /proc)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            parent[int(d)] = _ppid(int(d))
    out, grew = {root}, True
    while grew:
        grew = False
        for p, pp in parent.items():
            if pp in out and p not in out:
                out.add(p)
                grew = True
    return sorted(out)


def _hex_addr(h: str) -> str:
    import ipaddress

    raw = bytes.fromhex(h)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc/net/tcp6: four little-endian 32-bit words
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    a = ipaddress.IPv6Address(words)
    return str(a.ipv4_mapped) if a.ipv4_mapped else str(a)


def listening_of(pids) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket the processes hold,
    from /proc (no psutil): their socket inodes, then /proc/PID/net/tcp{,6}."""
    out = []
    for pid in pids:
        inodes = set()
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
        if not inodes:
            continue
        for table in ("tcp", "tcp6"):
            try:
                with open(f"/proc/{pid}/net/{table}") as f:
                    rows = f.read().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                c = row.split()
                if len(c) > 9 and c[3] == "0A" and c[9] in inodes:  # 0A: LISTEN
                    addr, port = c[1].split(":")
                    out.append((_hex_addr(addr), int(port, 16), pid))
    return out
