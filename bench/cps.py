"""Calls-per-second benchmark: SIPp carrier -> B2BUA -> SIPp callee trunk, on loopback.

Starts a SIPp uas as the callee's trunk, the B2BUA under test (ansim with a generated
map of --bindings bindings so that every call is a real lookup, or sippy's b2bua with
--peer sippy, or both), and a SIPp uac as the carrier. The offered rate ramps through
--rates; for each step it reports offered and achieved calls/s, failed calls at BOTH
SIPp ends, retransmissions, CPU ms per call of the B2BUA process (from /proc), p50/p99
INVITE->200 latency (SIPp rtd) and kernel UDP receive errors. Each step first runs
--warmup seconds at its rate (45 by default: longer than an ended call's transactions
live), so that CPU is measured on steady traffic. A step fails when any
call failed at either end; the run stops at the first failing step and prints the
highest clean rate. Every step is bounded in calls and time.

    .venv/bin/python bench/cps.py                       # ansim alone
    .venv/bin/python bench/cps.py --peer sippy          # ansim, then sippy, same ramp, ratios
    .venv/bin/python bench/cps.py --concurrent 5000     # memory: RSS per 1,000 concurrent calls
    .venv/bin/python bench/cps.py --rates 100 --seconds 25 --warmup 0 --loss 5 --reorder 2 --direct

With --loss or --reorder (root only) everything runs in a network namespace made for the
run (``bench/lossy_net.py``) where that percentage of UDP datagrams is dropped, or delayed
by --delay-ms so that later ones overtake it; --direct then runs SIPp calling SIPp
straight through the same ramp and the same network, for comparison. Each step also
prints the CDRs ansim wrote for it and how many datagrams the namespace dropped and delayed.

    .venv/bin/python bench/cps.py --overload --clean-rate 2500 --baseline ../ansim-base
    .venv/bin/python bench/cps.py --media relay         # media anchored by one relay process

``--overload`` offers twice ``--clean-rate`` (the highest clean rate of a ramp) for
``--seconds`` (60 by default in this mode) with a carrier scenario that accepts a 503
instead of the call (``sipp/uac_overload.xml``), after a step at the clean rate itself;
with ``--baseline DIR`` the same two steps run again against the engine of another
checkout (its sources and compiled build, run with this virtualenv's Python), so that
the two builds are compared in one run. For each step it reports goodput (calls
completed end to end per second), the calls refused with 503 and how fast (INVITE->503),
calls answered 100 Trying that failed, INVITE retransmissions and CPU per completed call.

With ``--media relay`` every call's media is anchored by one relay process (started by
``ansim serve`` on the engine's CPU): a port pair per leg, the SDP rewritten toward it,
the relay told of each answer and deleted at the end; SIPp sends no RTP, so this is the
signalling cost of anchoring. The relay's CPU is reported apart ("relay").

    .venv/bin/python bench/cps.py --rates 1500 --seconds 30 --warmup 20 --api-load 1000

With ``--api-load N`` the engine runs with its control API on (started by ``ansim
serve``; a tenant and key made with ``ansim tenants``/``ansim keys``, a pool of
``--api-numbers`` numbers apart from the map's) and each step runs twice: with the API
idle, then with ``api_load.py`` binding N axb bindings/s from the pool and unbinding N/s;
the API's rates, latencies and errors and each process's share of the CPU are printed.

sippy comes from the bench extra (`pip install -e '.[bench]'`); it is run as
`b2bua -f -u -A 0 -s HOST:PORT` with SIPLOG_BEND=none.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import wire_latency  # noqa: E402
from lossy_net import LossyNet  # noqa: E402

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
# The callee may see an ACK or an INVITE retransmission after the BYE (reordered): logged,
# not a reason to abort the call (see bench/sipp/uas_cps.xml).
UAS_BEHAVIOURS = ["-default_behaviors", "all,-abortunexp"]
SIPP_TUNING = ["-buff_size", "4194304", "-max_recv_loops", "10000", "-max_sched_loops", "10000"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOAD_POLICIES = {"normal": os.SCHED_OTHER, "batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE}


def free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


# The lossy namespace the run is in (--loss, --reorder), for its counters; None: loopback as is.
NET: LossyNet | None = None
# --wire: each step also measures INVITE->200 from a capture of the carrier's traffic;
# --keep: the capture files stay in the step folders.
WIRE = False
KEEP = False
# Extra SIPp options (--trace: message and error logs in each step's folder).
SIPP_TRACE: list[str] = []

# CPUs for the B2BUA under test and for the SIPp load generators (see --pin); None: any.
PINNING: dict[str, set[int] | None] = {"b2bua": None, "load": None}
ALL_CPUS: set[int] = os.sched_getaffinity(0)


def _pin(role: str) -> Callable[[], None] | None:
    """A preexec_fn that binds the child (and every thread it starts) to ``role``'s CPUs."""
    cpus = PINNING[role]
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid``, its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (the media relays ``ansim serve`` starts)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def children_cpu(pid: int, but: tuple[int, ...] = ()) -> float:
    total = 0.0
    for child in children(pid):
        if child in but:
            continue
        try:
            user, system = cpu_seconds(child)
        except OSError:
            continue
        total += user + system
    return total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def udp_errors() -> tuple[int, int]:
    lines = [
        line.split()
        for line in Path("/proc/net/snmp").read_text().splitlines()
        if line.startswith("Udp:")
    ]
    header, values = lines[0], lines[1]
    row = dict(zip(header[1:], map(int, values[1:]), strict=True))
    return row.get("RcvbufErrors", 0), row.get("InErrors", 0)


def wait_udp(port: int, timeout: float = 10.0) -> None:
    """Wait until something answers OPTIONS on 127.0.0.1:port."""
    msg = (
        "OPTIONS sip:ping@127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bKping%d\r\n"
        "From: <sip:ping@127.0.0.1>;tag=p\r\nTo: <sip:ping@127.0.0.1>\r\nCall-ID: ping%d\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    end = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.2)
        n = 0
        while time.monotonic() < end:
            n += 1
            s.sendto((msg % (port, s.getsockname()[1], n, n)).encode(), ("127.0.0.1", port))
            try:
                s.recvfrom(4096)
                return
            except TimeoutError:
                continue
    raise RuntimeError(f"nothing answers on udp 127.0.0.1:{port}")


@dataclass
class Step:
    peer: str
    offered: float
    calls: int
    achieved: float
    uac_ok: int
    uac_failed: int
    uas_ok: int
    uas_failed: int
    cdrs: int | None
    net: dict[str, int] | None
    retrans: int
    cpu_ms_per_call: float
    user_ms_per_call: float
    p50_ms: float
    p99_ms: float
    rcvbuf_errors: int
    ok: bool
    media_ms_per_call: float = 0.0  # the engine's child processes (media relays)
    api: dict[str, object] | None = None  # api_load.py's report (--api-load)
    # % of one CPU over the measured part: engine, api, load (generator), sipp (both), sum
    cpu_shares: dict[str, float] | None = None
    # --wire: from a capture of both legs (µs resolution), for "total" (the carrier's
    # INVITE->200), "engine" (both legs' transit through the engine) and "callee" (the
    # callee's INVITE->200): p50, p99, p99.9 in ms
    wire_calls: int = 0
    wire: dict[str, list[float]] | None = None
    # every call's SIPp INVITE->200 and wire times (ms), for --pairs to pool
    raw: dict[str, list[float]] | None = None
    # the engine's event-loop thread over the measured part (/proc schedstat and status):
    # ms per second it ran, waited runnable for a CPU, and context switches per second
    # it made itself (it slept: no datagram, or a lock, a page, the disk) or had forced
    loop_sched: dict[str, float] | None = None


def loop_sched(pid: int) -> tuple[float, float, int, int, float]:
    """(ns run, ns waited for a CPU, voluntary, involuntary switches, when) of the
    thread ``pid`` (a process's first thread: the engine's event loop)."""
    run, wait = (int(v) for v in Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[:2])
    vol = invol = 0
    for line in Path(f"/proc/{pid}/task/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            vol = int(line.split()[1])
        elif line.startswith("nonvoluntary_ctxt_switches:"):
            invol = int(line.split()[1])
    return run, wait, vol, invol, time.monotonic()


def loop_sched_rates(
    a: tuple[float, float, int, int, float], b: tuple[float, float, int, int, float]
) -> dict[str, float]:
    secs = max(b[4] - a[4], 1e-9)
    return {
        "ran ms/s": (b[0] - a[0]) / 1e6 / secs,
        "waited for a CPU ms/s": (b[1] - a[1]) / 1e6 / secs,
        "slept /s": (b[2] - a[2]) / secs,
        "preempted /s": (b[3] - a[3]) / secs,
    }


def last_stat_row(path: Path) -> dict[str, str]:
    rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    header = rows[0]
    return dict(zip(header, rows[-1], strict=False))


def stat_int(row: dict[str, str], name: str) -> int:
    value = row.get(name, "0") or "0"
    try:
        return int(value)
    except ValueError:
        return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# --limits: every call checked and counted in the shared limits store (caps per binding
# per hour and per day, per virtual number per hour, the marketing rule), none reached.
LIMITS_SECTION = (
    "limits: {{store: '{store}', binding: {{calls_per_hour: 1000000, calls_per_day: 1000000}},"
    " virtual: {{calls_per_hour: 1000000}}, marketing: {{distinct: 1000000, window: 86400}}}}\n"
)

# --api-load: the engine's control API binding and unbinding during a step (api_load.py).
API_TENANT = "load"
API_POOL = "load"
API_PREFIX = "+82506"  # the pool's numbers: apart from the map's +82507...


def http_call(port: int, method: str, path: str, token: str = "", body: object = None) -> int:
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


def pin_process(pid: int, cpus: set[int]) -> None:
    """Bind process ``pid`` and every thread it has to ``cpus`` (threads it starts later
    inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except OSError:
            continue


class ApiSetup:
    """The control API of the engine under test (``api.listen``, its process started by
    ``ansim serve``), a tenant and its key made with ``ansim tenants`` and ``ansim keys``,
    and the tenant's pool of ``numbers`` numbers apart from the map's for the load to bind
    on; the API processes are moved to the CPUs ``cpus`` says (``b2bua``, ``load`` or
    ``any``) once started."""

    def __init__(self, numbers: int, cpus: str, scheduling: str = "batch") -> None:
        self.port = free_port()
        self.numbers = numbers
        self.cpus = cpus
        self.scheduling = scheduling
        self.token = ""
        self.pids: list[int] = []

    def make_key(self, cfg: Path) -> None:
        ansim = str(ROOT / ".venv/bin/ansim")
        subprocess.run(
            [ansim, "tenants", "set", API_TENANT, "--config", str(cfg), "--numbers", API_PREFIX],
            check=True,
            capture_output=True,
        )
        made = subprocess.run(
            [ansim, "keys", "create", "--config", str(cfg), "--tenant", API_TENANT,
             "--scope", "bindings:write", "--scope", "pools:write", "--name", "cps.py load"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        self.token = made.split("token (shown only now):", 1)[1].split()[0]

    def ready(self, engine_pid: int) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http_call(self.port, "GET", "/healthz") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the control API did not start")
            time.sleep(0.2)
        self.pids = children(engine_pid)
        cpus = cpu_set(self.cpus)
        for pid in self.pids:
            pin_process(pid, cpus)
        pool = {
            "name": API_POOL,
            "capacity": 1_000_000,
            "cooloff_seconds": 0,
            "numbers": [{"number": f"{API_PREFIX}{n:08d}"} for n in range(self.numbers)],
        }
        status = http_call(self.port, "POST", "/v1/pools", self.token, pool)
        if status != 201:
            raise RuntimeError(f"creating the pool answered {status}")

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                total += sum(cpu_seconds(pid))
            except OSError:
                continue
        return total


def cpu_set(name: str) -> set[int]:
    """The CPUs of ``--api-cpu``/``--load-cpu``: the B2BUA's, SIPp's, or any."""
    chosen = PINNING.get(name) if name in ("b2bua", "load") else None
    return set(chosen) if chosen is not None else set(ALL_CPUS)


@dataclass
class ApiLoad:
    """``rate`` binds/s and as many unbinds/s through ``setup``'s API during a step."""

    setup: ApiSetup
    rate: float
    connections: int
    live: int
    cpus: str
    nice: int = 0
    policy: str = "normal"
    proc: subprocess.Popen[bytes] | None = None
    parties: int = 0  # the first party number of the next run, so runs never reuse a pair

    def start(self, step_dir: Path, seconds: float, measure_from: float) -> None:
        cpus, nice, policy = cpu_set(self.cpus), self.nice, LOAD_POLICIES[self.policy]

        def place() -> None:
            os.sched_setaffinity(0, cpus)
            os.nice(nice)
            if policy != os.SCHED_OTHER:
                os.sched_setscheduler(0, policy, os.sched_param(0))

        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve().parent / "api_load.py"),
             "--port", str(self.setup.port), "--token", self.setup.token, "--pool", API_POOL,
             "--rate", str(self.rate), "--seconds", str(seconds), "--measure-from", str(measure_from),
             "--connections", str(self.connections), "--live", str(self.live),
             "--first", str(self.parties)],
            stdout=subprocess.PIPE, stderr=open(step_dir / "api_load.log", "wb"),  # noqa: SIM115
            preexec_fn=place,
        )  # fmt: skip
        self.parties += int(self.rate * seconds) + 1

    def finish(self) -> dict[str, object]:
        import json

        assert self.proc is not None
        out, _ = self.proc.communicate(timeout=60)
        lines = out.decode().strip().splitlines()
        if self.proc.returncode != 0 or not lines:
            raise RuntimeError(f"api_load.py exited with {self.proc.returncode}")
        report: dict[str, object] = json.loads(lines[-1])
        return report


@dataclass
class Neighbour:
    """``--neighbour``: a process that is not ansim's, on the load CPUs at the idle
    policy, busy on whatever CPU time SIPp leaves there during a step: a control for
    ``--api-load``, to tell what the API costs the calls from what a busy neighbouring
    CPU costs them on this host. ``spin`` only computes; ``memory`` also writes a 64 MiB
    buffer (cache and memory traffic, as a Python server makes)."""

    kind: str
    cpus: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self, step_dir: Path, seconds: float, measure_from: float) -> None:
        cpus = cpu_set(self.cpus)

        def place() -> None:
            os.sched_setaffinity(0, cpus)
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

        work = (
            "while True: pass"
            if self.kind == "spin"
            else "b = bytearray(64 << 20)\nwhile True:\n    b[::64] = b[1::64]"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"import time\nend = time.monotonic() + {seconds}\n"
             + work.replace("while True", "while time.monotonic() < end")],
            stdout=subprocess.DEVNULL, stderr=open(step_dir / "neighbour.log", "wb"),  # noqa: SIM115
            preexec_fn=place,
        )  # fmt: skip

    def finish(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


class B2bua:
    """The process under test."""

    def __init__(
        self,
        peer: str,
        work: Path,
        uas_port: int,
        bindings: int,
        profile: str | None = None,
        tree: Path | None = None,
        media: str | None = None,
        limits: bool = False,
        api: ApiSetup | None = None,
        scheduling: str = "normal",
        cdr_dir: Path | None = None,
    ) -> None:
        self.api = api
        self.scheduling = scheduling  # the engine's scheduling.policy
        # the CDR file and its journal: in the work folder, or in cdr_dir (e.g. a tmpfs)
        self.cdr_path = (cdr_dir or work) / "cdr.sqlite"
        self.media = media
        self.limits = limits
        self.peer = peer
        self.tree = tree  # another checkout's sources to run instead of this one
        self.profile = profile
        # "direct": no B2BUA, the carrier's SIPp calls the callee's
        self.port = uas_port if peer == "direct" else free_port()
        self.work = work
        self.proc: subprocess.Popen[bytes] | None = None
        self.spy: subprocess.Popen[bytes] | None = None
        self.uas_port = uas_port
        self.bindings = bindings

    def start(self) -> None:
        if self.peer == "direct":
            return
        log = open(self.work / f"{self.peer}.log", "wb")  # noqa: SIM115
        if self.peer == "ansim":
            cfg = self.work / "config"
            cfg.mkdir(exist_ok=True)
            (cfg / "ansim.yaml").write_text(
                f"sip: {{listen: ['udp:127.0.0.1:{self.port}']}}\n"
                f"numbers: {{store: '{self.work}/numbers.lmdb', maps: '{self.work}/no-maps', watch: false}}\n"
                f"metrics: {{listen: null}}\ncdr: '{self.cdr_path}'\nsmpp: null\n"
                "logging: {level: warning}\n"
                f"scheduling: {{policy: {self.scheduling}}}\n"
            )
            if self.limits:
                with (cfg / "ansim.yaml").open("a") as f:
                    f.write(LIMITS_SECTION.format(store=self.work / "limits.lmdb"))
            if self.api is not None:
                with (cfg / "ansim.yaml").open("a") as f:
                    f.write(
                        f"api: {{listen: '127.0.0.1:{self.api.port}', "
                        f"scheduling: {self.api.scheduling}}}\n"
                    )
                self.api.make_key(cfg)
            if self.media == "relay":
                with (cfg / "ansim.yaml").open("a") as f:
                    f.write(
                        "media: {mode: relay, relays: [{control: "
                        f"'{self.work}/relay.sock', address: 127.0.0.1, ports: 30000-39999}}]}}\n"
                    )
            (cfg / "trunks.yaml").write_text(
                "trunks:\n  - name: callee\n    accept_from: [127.0.0.0/8]\n"
                f"    address: 127.0.0.1:{self.uas_port}\n    invite_timeout: 8\n"
                "routes:\n  - prefix: '+'\n    trunks: [callee]\n"
            )
            cmd = [str(ROOT / ".venv/bin/ansim"), "serve", "--config", str(cfg)]
            env = dict(os.environ)
            if self.tree is not None:
                cmd = [
                    str(ROOT / ".venv/bin/python"),
                    "-m",
                    "b2bua.cli",
                    "serve",
                    "--config",
                    str(cfg),
                ]
                env["PYTHONPATH"] = str(self.tree)
        else:
            exe = shutil.which("b2bua", path=str(ROOT / ".venv/bin")) or shutil.which("b2bua")
            if exe is None:
                raise SystemExit("sippy's b2bua not found: pip install -e '.[bench]'")
            cmd = [
                exe, "-f", "-u", "-A", "0", "-s", f"127.0.0.1:{self.uas_port}",
                "--sip_address=127.0.0.1", f"--sip_port={self.port}",
            ]  # fmt: skip
            env = dict(os.environ, SIPLOG_BEND="none")
        self.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.work,
            env=env,
            preexec_fn=_pin("b2bua"),
        )
        wait_udp(self.port, 20.0)
        if self.api is not None:
            self.api.ready(self.proc.pid)
        if self.profile:
            # py-spy samples the process; collapsed stacks go to the given file. --native
            # shows the compiled hot path's C functions (CPyDef_...), not only Python frames.
            spy = [
                str(ROOT / ".venv/bin/py-spy"),
                "record",
                "--native",
                "-f",
                "raw",
                "-r",
                "250",
                "-o",
                self.profile,
            ]
            self.spy = subprocess.Popen([*spy, "--pid", str(self.proc.pid)], stdout=log, stderr=log)

    def cdr_count(self) -> int | None:
        """CDR rows ansim has written so far (None for the other peers)."""
        if self.peer != "ansim":
            return None
        path = self.cdr_path
        if not path.exists():
            return 0
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return int(db.execute("SELECT count(*) FROM calls").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()

    def stop(self) -> None:
        if self.spy is not None:
            self.spy.send_signal(signal.SIGINT)
            try:
                self.spy.wait(20)
            except subprocess.TimeoutExpired:
                self.spy.kill()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def callee_of(user: bytes) -> bytes:
    """The callee's number for a dialled X of ``build_store``'s map (+82507N -> +8210N)."""
    return b"+8210" + user[6:] if user.startswith(b"+82507") else user


def build_store(work: Path, count: int) -> Path:
    """A store of ``count`` ax bindings and the SIPp injection file that calls them."""
    sys.path.insert(0, str(ROOT))
    from translate.bindings import Binding
    from translate.store import Store

    store_path = work / "numbers.lmdb"
    now = time.time()
    with Store(store_path, sync=False) as store:
        store.put_many(
            (Binding(f"b{i}", "ax", f"+82507{i:08d}", f"+8210{i:08d}") for i in range(count)),
            now=now,
            source="api",
        )
        store.flush()
    inj = work / "calls.csv"
    with open(inj, "w") as f:
        f.write("SEQUENTIAL\n")
        step = max(1, count // 20000)
        for i in range(0, count, step):
            f.write(f"+82507{i:08d};+8211{i:08d};\n")
    return inj


def run_step(
    b2bua: B2bua,
    work: Path,
    inj: Path,
    rate: float,
    seconds: float,
    hold_ms: int,
    limit: int,
    warmup: float = 0.0,
    api_load: ApiLoad | Neighbour | None = None,
) -> Step:
    """One step: ``warmup`` seconds at ``rate``, then ``seconds`` more that are measured.

    Failed calls count over the whole step; CPU per call is the engine's CPU from the
    end of the warm-up to the end of the step over the calls offered in that time.
    """
    total = warmup + seconds
    calls = max(int(rate * total), 1)
    step_dir = Path(tempfile.mkdtemp(dir=work, prefix=f"{b2bua.peer}-{int(rate)}-"))
    uas_port = b2bua.uas_port
    uas = subprocess.Popen(
        ["sipp", "-sf", str(SIPP_DIR / "uas_cps.xml"), "-i", "127.0.0.1", "-p", str(uas_port), "-m", str(calls),
         "-nostdin", "-trace_stat", "-stf", "uas.csv", "-fd", "1", *SIPP_TUNING, *UAS_BEHAVIOURS,
         *[a.replace("%s", "uas") for a in SIPP_TRACE]],
        cwd=step_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pin("load"),
    )  # fmt: skip
    time.sleep(0.3)
    pid = b2bua.proc.pid if b2bua.proc is not None else None
    cpu0 = cpu_seconds(pid) if pid is not None else (0.0, 0.0)
    api_pids = tuple(b2bua.api.pids) if b2bua.api is not None else ()
    media0 = children_cpu(pid, api_pids) if pid is not None else 0.0
    err0 = udp_errors()
    cdr0 = b2bua.cdr_count()
    net0 = NET.counters() if NET is not None else None
    uac_port = free_port()
    capture = (
        wire_latency.Capture(step_dir / "sip.pcap", (uac_port, uas_port), _pin("load"))
        if WIRE and b2bua.peer != "direct"
        else None
    )
    if api_load is not None:
        api_load.start(step_dir, total, warmup)
    t0 = time.monotonic()
    uac = subprocess.Popen(
        ["sipp", "-sf", str(SIPP_DIR / "uac_cps.xml"), f"127.0.0.1:{b2bua.port}", "-i", "127.0.0.1",
         "-p", str(uac_port), "-inf", str(inj), "-r", str(rate), "-m", str(calls), "-l", str(limit),
         "-d", str(hold_ms), "-nostdin", "-trace_stat", "-stf", "uac.csv", "-fd", "1", "-trace_rtt",
         "-rtt_freq", "1", "-timeout", str(int(total * 3 + hold_ms / 1000 + 30)), "-timeout_error", *SIPP_TUNING,
         *[a.replace("%s", "uac") for a in SIPP_TRACE]],
        cwd=step_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pin("load"),
    )  # fmt: skip
    measured_calls = calls
    if warmup > 0:
        while time.monotonic() - t0 < warmup and uac.poll() is None:
            time.sleep(0.05)
        cpu0 = cpu_seconds(pid) if pid is not None else (0.0, 0.0)
        media0 = children_cpu(pid, api_pids) if pid is not None else 0.0
        measured_calls = max(int(rate * seconds), 1)
    sched0 = loop_sched(pid) if pid is not None else None
    shares = None
    if b2bua.api is not None and pid is not None:
        # where the CPU goes, over the measured part but its last second (SIPp is still
        # running then, so its processes can be read)
        load_pid = api_load.proc.pid if api_load is not None and api_load.proc else None
        snap0 = cpu_snapshot(pid, b2bua.api, load_pid, (uac.pid, uas.pid))
        while time.monotonic() - t0 < total - 1.0 and uac.poll() is None:
            time.sleep(0.05)
        snap1 = cpu_snapshot(pid, b2bua.api, load_pid, (uac.pid, uas.pid))
        shares = cpu_shares(snap0, snap1)
    try:
        uac.wait(timeout=total * 4 + hold_ms / 1000 + 60)
    except subprocess.TimeoutExpired:
        uac.kill()
        uac.wait()
    elapsed = time.monotonic() - t0
    sched = (
        loop_sched_rates(sched0, loop_sched(pid))
        if sched0 is not None and pid is not None
        else None
    )
    if capture is not None:
        capture.stop()
    cpu1 = cpu_seconds(pid) if pid is not None else (0.0, 0.0)
    media_cpu = (children_cpu(pid, api_pids) if pid is not None else 0.0) - media0
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    cpu = user + system
    try:
        uas.wait(timeout=30)
    except subprocess.TimeoutExpired:
        uas.send_signal(signal.SIGUSR1)  # SIPp: stop gracefully
        try:
            uas.wait(timeout=10)
        except subprocess.TimeoutExpired:
            uas.kill()
            uas.wait()
    err1 = udp_errors()
    cdrs = None
    if cdr0 is not None:
        # records are written by a thread off the loop: give the last ones a moment
        deadline = time.monotonic() + 10
        while (cdrs := (b2bua.cdr_count() or 0) - cdr0) < calls and time.monotonic() < deadline:
            time.sleep(0.2)
    net = None
    if net0 is not None and NET is not None:
        net = {k: v - net0.get(k, 0) for k, v in NET.counters().items()}
    uac_row = last_stat_row(step_dir / "uac.csv")
    uas_row = last_stat_row(step_dir / "uas.csv")
    rtts: list[float] = []
    for rtt_file in step_dir.glob("*_rtt.csv"):
        for line in rtt_file.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    rtts.append(float(parts[1]))
                except ValueError:
                    pass
    uac_ok = stat_int(uac_row, "SuccessfulCall(C)")
    uac_failed = stat_int(uac_row, "FailedCall(C)") + (
        calls - uac_ok - stat_int(uac_row, "FailedCall(C)")
    )
    uas_ok = stat_int(uas_row, "SuccessfulCall(C)")
    uas_failed = stat_int(uas_row, "FailedCall(C)") + max(
        0, calls - uas_ok - stat_int(uas_row, "FailedCall(C)")
    )
    ok = (
        uac.returncode == 0
        and uac_failed == 0
        and uas_failed == 0
        and (cdrs is None or cdrs >= calls)
    )
    duration = max(elapsed - hold_ms / 1000, 1e-9)
    wire: dict[str, list[float]] = {"total": [], "engine": [], "callee": []}
    if capture is not None:
        legs = wire_latency.breakdown(capture.path, b2bua.port, uas_port, callee_of)
        wire = {k: [t * 1000 for t in v] for k, v in legs.items()}
        if not KEEP:
            capture.path.unlink()
    if isinstance(api_load, Neighbour):
        api_load.finish()
    api_report = api_load.finish() if isinstance(api_load, ApiLoad) else None
    if api_report is not None:
        for name in ("bind", "unbind"):
            op = api_report[name]
            ok = ok and isinstance(op, dict) and op["errors"] == 0
    return Step(
        peer=b2bua.peer,
        offered=rate,
        calls=calls,
        achieved=uac_ok / duration,
        uac_ok=uac_ok,
        uac_failed=uac_failed,
        uas_ok=uas_ok,
        uas_failed=uas_failed,
        cdrs=cdrs,
        net=net,
        retrans=stat_int(uac_row, "Retransmissions(C)") + stat_int(uas_row, "Retransmissions(C)"),
        cpu_ms_per_call=cpu * 1000 / max(min(uac_ok, measured_calls), 1),
        user_ms_per_call=user * 1000 / max(min(uac_ok, measured_calls), 1),
        p50_ms=percentile(rtts, 0.50),
        p99_ms=percentile(rtts, 0.99),
        rcvbuf_errors=(err1[0] - err0[0]) + (err1[1] - err0[1]),
        ok=ok,
        media_ms_per_call=media_cpu * 1000 / max(min(uac_ok, measured_calls), 1),
        api=api_report,
        cpu_shares=shares,
        loop_sched=sched,
        wire_calls=len(wire["total"]),
        wire={k: [percentile(v, q) for q in (0.5, 0.99, 0.999)] for k, v in wire.items()}
        if capture is not None
        else None,
        raw={"sipp": rtts, **(wire if capture is not None else {})},
    )


def cpu_snapshot(
    engine: int, api: ApiSetup, load: int | None, sipp: tuple[int, ...]
) -> dict[str, float]:
    def of(pids: tuple[int, ...]) -> float:
        total = 0.0
        for p in pids:
            try:
                total += sum(cpu_seconds(p))
            except OSError:
                continue
        return total

    return {
        "t": time.monotonic(),
        "engine": sum(cpu_seconds(engine)),
        "api": api.cpu(),
        "load": of((load,)) if load is not None else 0.0,
        "sipp": of(sipp),
    }


def cpu_shares(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """% of one CPU each part used between two snapshots, and their sum (the machine's
    own idle count is not reliable on a virtual machine, so other work is not shown)."""
    wall = max(b["t"] - a["t"], 1e-9)
    shares = {k: 100 * (b[k] - a[k]) / wall for k in ("engine", "api", "load", "sipp")}
    shares["sum"] = sum(shares.values())
    return shares


@dataclass
class OverloadStep:
    build: str
    offered: float
    calls: int
    seconds: float
    completed: int
    admitted: int
    refused: int
    uac_failed: int
    uas_failed: int
    invite_retrans: int
    cpu_ms_per_completed: float
    p50_setup_ms: float
    p99_setup_ms: float
    p50_refuse_ms: float
    p99_refuse_ms: float
    rcvbuf_errors: int

    @property
    def goodput(self) -> float:
        return self.completed / self.seconds


def run_overload_step(
    b2bua: B2bua, work: Path, inj: Path, rate: float, seconds: float, limit: int
) -> OverloadStep:
    """``seconds`` at ``rate`` with the scenario that takes a 503 for an answer."""
    calls = max(int(rate * seconds), 1)
    step_dir = Path(tempfile.mkdtemp(dir=work, prefix=f"overload-{b2bua.peer}-{int(rate)}-"))
    uas = subprocess.Popen(
        ["sipp", "-sf", str(SIPP_DIR / "uas_cps.xml"), "-i", "127.0.0.1", "-p", str(b2bua.uas_port),
         "-nostdin", "-trace_stat", "-stf", "uas.csv", "-fd", "1", *SIPP_TUNING],
        cwd=step_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pin("load"),
    )  # fmt: skip
    time.sleep(0.3)
    assert b2bua.proc is not None
    pid = b2bua.proc.pid
    cpu0 = cpu_seconds(pid)
    err0 = udp_errors()
    t0 = time.monotonic()
    uac = subprocess.Popen(
        ["sipp", "-sf", str(SIPP_DIR / "uac_overload.xml"), f"127.0.0.1:{b2bua.port}", "-i", "127.0.0.1",
         "-p", str(free_port()), "-inf", str(inj), "-r", str(rate), "-m", str(calls), "-l", str(limit),
         "-d", "0", "-nostdin", "-trace_stat", "-stf", "uac.csv", "-fd", "1", "-trace_counts",
         "-trace_rtt", "-rtt_freq", "1", "-timeout", str(int(seconds * 3 + 60)), "-timeout_error",
         *SIPP_TUNING],
        cwd=step_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pin("load"),
    )  # fmt: skip
    try:
        uac.wait(timeout=seconds * 4 + 90)
    except subprocess.TimeoutExpired:
        uac.kill()
        uac.wait()
    elapsed = time.monotonic() - t0
    cpu1 = cpu_seconds(pid)
    time.sleep(5.0)  # the callee sees the last BYEs; its 4 s timewait ends
    uas.send_signal(signal.SIGUSR1)  # SIPp: stop gracefully
    try:
        uas.wait(timeout=15)
    except subprocess.TimeoutExpired:
        uas.kill()
        uas.wait()
    err1 = udp_errors()
    uac_row = last_stat_row(step_dir / "uac.csv")
    uas_row = last_stat_row(step_dir / "uas.csv")
    counts: dict[str, str] = {}
    for path in step_dir.glob("*_counts.csv"):
        counts = last_stat_row(path)
    setup: list[float] = []
    refuse: list[float] = []
    for rtt_file in step_dir.glob("*_rtt.csv"):
        for line in rtt_file.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 3:
                try:
                    value = float(parts[1])
                except ValueError:
                    continue
                (refuse if parts[2].strip() == "2" else setup).append(value)
    completed = stat_int(counts, "11_200_Recv")
    admitted = stat_int(counts, "2_100_Recv") + stat_int(counts, "3_180_Recv")
    refused = stat_int(counts, "4_503_Recv")
    uac_ok = stat_int(uac_row, "SuccessfulCall(C)")
    uas_ok = stat_int(uas_row, "SuccessfulCall(C)")
    uas_failed = stat_int(uas_row, "FailedCall(C)") + max(0, admitted - uas_ok)
    cpu = sum(cpu1) - sum(cpu0)
    return OverloadStep(
        build=b2bua.peer,
        offered=rate,
        calls=calls,
        seconds=elapsed,
        completed=completed,
        admitted=admitted,
        refused=refused,
        uac_failed=calls - uac_ok,
        uas_failed=uas_failed,
        invite_retrans=stat_int(counts, "1_INVITE_Retrans"),
        cpu_ms_per_completed=cpu * 1000 / max(completed, 1),
        p50_setup_ms=percentile(setup, 0.50),
        p99_setup_ms=percentile(setup, 0.99),
        p50_refuse_ms=percentile(refuse, 0.50),
        p99_refuse_ms=percentile(refuse, 0.99),
        rcvbuf_errors=(err1[0] - err0[0]) + (err1[1] - err0[1]),
    )


def print_overload(s: OverloadStep) -> None:
    print(
        f"{s.build:8} offered {s.offered:6.0f}/s for {s.seconds:5.1f} s: goodput {s.goodput:7.1f}/s "
        f"({s.completed} completed of {s.calls}), refused 503 {s.refused} "
        f"(INVITE->503 p50 {s.p50_refuse_ms:.2f} ms p99 {s.p99_refuse_ms:.2f} ms), "
        f"failed uac {s.uac_failed} uas {s.uas_failed} (of {s.admitted} answered 100), "
        f"INVITE retrans {s.invite_retrans}, cpu {s.cpu_ms_per_completed:.3f} ms/completed call, "
        f"INVITE->200 p50 {s.p50_setup_ms:.2f} ms p99 {s.p99_setup_ms:.2f} ms, "
        f"udp rcv errors {s.rcvbuf_errors}",
        flush=True,
    )


def overload(args: argparse.Namespace, work: Path, inj: Path) -> None:
    builds: list[tuple[str, Path | None]] = [("ansim", None)]
    if args.baseline:
        builds.append(("baseline", Path(args.baseline).resolve()))
    results: list[tuple[OverloadStep, OverloadStep]] = []
    for name, tree in builds:
        b2bua = B2bua("ansim", work, free_port(), args.bindings, tree=tree)
        b2bua.start()
        b2bua.peer = name
        try:
            clean = run_overload_step(b2bua, work, inj, args.clean_rate, args.seconds, args.limit)
            print_overload(clean)
            time.sleep(40.0)  # the clean step's transactions end
            over = run_overload_step(
                b2bua, work, inj, 2 * args.clean_rate, args.seconds, args.limit
            )
            print_overload(over)
            results.append((clean, over))
        finally:
            b2bua.stop()
    print()
    for clean, over in results:
        print(
            f"{clean.build:8} at {over.offered:.0f}/s (twice {clean.offered:.0f}/s): goodput "
            f"{over.goodput:.1f}/s = {100 * over.goodput / max(clean.goodput, 1e-9):.0f} % of its "
            f"{clean.goodput:.1f}/s at the clean rate; {over.refused} refused with 503, "
            f"{over.uas_failed} failed after 100 Trying, {over.uac_failed} failed at the caller"
        )


def print_step(s: Step) -> None:
    print(
        f"{s.peer:6} offered {s.offered:7.0f}/s  achieved {s.achieved:7.1f}/s  calls {s.calls:6}  "
        f"failed uac {s.uac_failed} uas {s.uas_failed}  "
        + (f"cdrs {s.cdrs}  " if s.cdrs is not None else "")
        + (f"datagrams lost {s.net['lost']} delayed {s.net['delayed']}  " if s.net else "")
        + f"retrans {s.retrans:4}  "
        f"cpu {s.cpu_ms_per_call:6.3f} ms/call ({s.user_ms_per_call:.3f} user)  INVITE->200 p50 {s.p50_ms:6.2f} ms p99 {s.p99_ms:7.2f} ms  "
        f"udp rcv errors {s.rcvbuf_errors}  {'clean' if s.ok else 'FAILED'}"
        + (f"  relay {s.media_ms_per_call:.3f} ms/call" if s.media_ms_per_call else ""),
        flush=True,
    )
    if s.wire_calls and s.wire:
        print(
            f"       wire ({s.wire_calls} calls, p50 / p99 / p99.9 ms): "
            + ", ".join(
                f"{name} {p50:.3f} / {p99:.3f} / {p999:.3f}"
                for name, (p50, p99, p999) in s.wire.items()
            ),
            flush=True,
        )
    if s.api is not None:
        for name in ("bind", "unbind"):
            op = s.api[name]
            assert isinstance(op, dict)
            print(
                f"       api {name:6} {op['per_second']:7.1f}/s (offered {s.api['rate']:.0f}/s,"
                f" {op['answered_per_second']}/s answered in the window)  "
                f"p50 {op['p50_ms']} ms p99 {op['p99_ms']} ms max {op['max_ms']} ms  "
                f"errors {op['errors']}  answers {op['statuses']}",
                flush=True,
            )
        print(
            f"       api load: unbinding from {s.api['unbinding_from_s']} s, "
            f"{s.api['starved_unbinds']} unbinds with nothing to unbind, at most "
            f"{s.api['most_waiting']} requests waiting for a connection, "
            f"{s.api['lost_connections']} connections lost",
            flush=True,
        )
    if s.loop_sched is not None:
        print(
            "       event loop thread: "
            + ", ".join(f"{k} {v:.0f}" for k, v in s.loop_sched.items()),
            flush=True,
        )
    if s.cpu_shares is not None:
        print(
            "       CPU (% of one): " + ", ".join(f"{k} {v:.0f}" for k, v in s.cpu_shares.items()),
            flush=True,
        )


def print_pooled(rate: float, pooled: dict[str, dict[str, list[float]]]) -> None:
    """--pairs: each latency over all the idle steps and over all the loaded ones."""
    for name in ("sipp", "total", "engine", "callee"):
        idle, load = pooled["idle"].get(name), pooled["load"].get(name)
        if not idle or not load:
            continue
        cells = []
        for q in (0.5, 0.99, 0.999):
            a, b = percentile(idle, q), percentile(load, q)
            cells.append(f"p{q * 100:g} {a:.3f} -> {b:.3f} ms ({100 * (b / a - 1):+.0f} %)")
        print(
            f"pooled {rate:.0f}/s {name:6} ({len(idle)} idle, {len(load)} loaded calls): "
            + ", ".join(cells),
            flush=True,
        )


def ramp(
    peer: str, args: argparse.Namespace, work: Path, inj: Path, rates: list[float]
) -> list[Step]:
    """Each rate of ``rates`` in turn; with --api-load, each twice: without the API load
    and then with it, on the same engine (its API processes idle in the first)."""
    uas_port = free_port()
    api = None
    load: ApiLoad | Neighbour | None = None
    label = "+api"
    if args.neighbour:
        load, label = Neighbour(args.neighbour, args.load_cpu), f"+{args.neighbour}"
    elif args.api_load and peer == "ansim":
        api = ApiSetup(args.api_numbers, args.api_cpu, args.api_scheduling)
        load = ApiLoad(
            api, args.api_load, args.api_connections, args.api_live, args.load_cpu,
            args.load_nice, args.load_policy,
        )  # fmt: skip
    b2bua = B2bua(
        peer,
        work,
        uas_port,
        args.bindings,
        args.profile if peer == "ansim" else None,
        media=args.media if peer == "ansim" else None,
        limits=args.limits and peer == "ansim",
        api=api,
        scheduling=args.engine_scheduling,
        cdr_dir=Path(tempfile.mkdtemp(prefix="ansim-cps-cdr-", dir=args.cdr_dir))
        if args.cdr_dir
        else None,
    )
    b2bua.start()
    steps: list[Step] = []
    try:
        for rate in rates:
            pooled: dict[str, dict[str, list[float]]] = {"idle": {}, "load": {}}
            for _ in range(args.pairs if load is not None else 1):
                step = run_step(b2bua, work, inj, rate, args.seconds, 0, args.limit, args.warmup)
                print_step(step)
                steps.append(step)
                if load is None:
                    break
                time.sleep(1.0)
                loaded = run_step(
                    b2bua, work, inj, rate, args.seconds, 0, args.limit, args.warmup, load
                )
                loaded.peer = label
                print_step(loaded)
                print(
                    f"       p99 INVITE->200 with the {label[1:]} load {loaded.p99_ms:.2f} ms, without"
                    f" {step.p99_ms:.2f} ms: {100 * (loaded.p99_ms / step.p99_ms - 1):+.0f} %",
                    flush=True,
                )
                if loaded.wire and step.wire:
                    print(
                        f"       wire p99 with the {label[1:]} load, without: "
                        + ", ".join(
                            f"{name} {loaded.wire[name][1]:.3f} ms, {step.wire[name][1]:.3f}"
                            f" ms ({100 * (loaded.wire[name][1] / step.wire[name][1] - 1):+.0f} %)"
                            for name in ("total", "engine", "callee")
                        ),
                        flush=True,
                    )
                steps.append(loaded)
                for kind, done in (("idle", step), ("load", loaded)):
                    for name, values in (done.raw or {}).items():
                        pooled[kind].setdefault(name, []).extend(values)
                step = loaded if step.ok else step
                if not step.ok:
                    break
                time.sleep(1.0)
            if load is not None and args.pairs > 1:
                print_pooled(rate, pooled)
            if not step.ok:
                break
            time.sleep(1.0)
    finally:
        b2bua.stop()
        if args.cdr_dir:
            shutil.rmtree(b2bua.cdr_path.parent, ignore_errors=True)
    return steps


def memory(args: argparse.Namespace, work: Path, inj: Path) -> None:
    uas_port = free_port()
    b2bua = B2bua("ansim", work, uas_port, args.bindings)
    b2bua.start()
    try:
        assert b2bua.proc is not None
        pid = b2bua.proc.pid
        base = rss_kib(pid)
        n = args.concurrent
        rate = min(1000.0, float(n) / 5)
        hold_ms = int((n / rate + 50) * 1000)
        step_dir = Path(tempfile.mkdtemp(dir=work, prefix="mem-"))
        uas = subprocess.Popen(
            ["sipp", "-sf", str(SIPP_DIR / "uas_cps.xml"), "-i", "127.0.0.1", "-p", str(uas_port), "-m", str(n),
             "-nostdin", *SIPP_TUNING, *UAS_BEHAVIOURS], cwd=step_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pin("load"),
        )  # fmt: skip
        time.sleep(0.3)
        uac = subprocess.Popen(
            ["sipp", "-sf", str(SIPP_DIR / "uac_cps.xml"), f"127.0.0.1:{b2bua.port}", "-i", "127.0.0.1",
             "-p", str(free_port()), "-inf", str(inj), "-r", str(rate), "-m", str(n), "-l", str(n + 10),
             "-d", str(hold_ms), "-nostdin", "-trace_stat", "-stf", "uac.csv", "-fd", "1", *SIPP_TUNING],
            cwd=step_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pin("load"),
        )  # fmt: skip
        # measured once every call is up and the transactions of its set-up have ended
        # (their timers run 64*T1 = 32 s), so what is left is what an established call costs
        time.sleep(n / rate + 40)
        peak = rss_kib(pid)
        row = last_stat_row(step_dir / "uac.csv")
        current = stat_int(row, "CurrentCall")
        print(
            f"ansim RSS before calls {base / 1024:.1f} MiB, with {current} concurrent calls {peak / 1024:.1f} MiB: "
            f"{(peak - base) * 1024 / max(current, 1) / 1000:.2f} KB per call "
            f"({(peak - base) / 1024 / max(current, 1) * 1000:.2f} MiB per 1,000 calls)",
            flush=True,
        )
        for p in (uac, uas):
            try:
                p.wait(timeout=hold_ms / 1000 + 30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    finally:
        b2bua.stop()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--peer", choices=("sippy",), help="also run this B2BUA through the same ramp")
    ap.add_argument("--only-peer", action="store_true", help="run only the peer, not ansim")
    ap.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                    default=[250, 500, 1000, 1500, 2000, 2500, 3000, 3500])  # fmt: skip
    ap.add_argument("--peer-rates", type=lambda s: [float(x) for x in s.split(",")],
                    default=[50, 100, 150, 200, 250, 300, 400, 500], help="the peer's ramp")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=5.0, help="measured length of each step")
    ap.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help="run the B2BUA under test on the last CPU and the SIPp peers on the others, so"
        " that the latency measured is the B2BUA's and not the scheduler's (default: on with"
        " two or more CPUs)",
    )
    ap.add_argument(
        "--warmup",
        type=float,
        default=45.0,
        help="seconds each step runs before it is measured (%(default)s: longer than an"
        " ended call's transactions live, so the measured part is steady traffic, calls"
        " being freed as fast as they are set up)",
    )
    ap.add_argument("--limit", type=int, default=5000, help="SIPp -l: most calls open at once")
    ap.add_argument("--bindings", type=int, default=100_000, help="bindings in the generated map")
    ap.add_argument(
        "--profile", metavar="FILE", help="sample ansim with py-spy, collapsed stacks to FILE"
    )
    ap.add_argument(
        "--concurrent", type=int, help="memory mode: hold this many calls open and report RSS"
    )
    ap.add_argument("--loss", type=float, default=0.0, help="%% of UDP datagrams dropped")
    ap.add_argument(
        "--reorder", type=float, default=0.0, help="%% of UDP datagrams delayed by --delay-ms"
    )
    ap.add_argument(
        "--delay-ms",
        type=lambda s: tuple(float(x) for x in s.split(",")),
        default=(10.0, 80.0),
        help="MIN,MAX: a delayed datagram waits a random time in this range (%(default)s)",
    )
    ap.add_argument(
        "--direct",
        action="store_true",
        help="also run SIPp calling SIPp directly through the same ramp (compare under --loss)",
    )
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (SIPp logs, CDRs)")
    ap.add_argument(
        "--scenarios",
        metavar="DIR",
        help="take the SIPp scenarios from DIR instead of bench/sipp (e.g. an older version)",
    )
    ap.add_argument(
        "--capture",
        metavar="FILE",
        help="with --loss/--reorder: dumpcap every datagram sent and those dropped to FILE",
    )
    ap.add_argument(
        "--wire",
        action="store_true",
        help="also measure INVITE->200 from a dumpcap capture of the carrier SIPp's "
        "datagrams (kernel timestamps, µs; SIPp's own clock moves in scheduler ticks)",
    )
    ap.add_argument(
        "--trace",
        action="store_true",
        help="SIPp error and message logs in each step's folder (with --keep)",
    )
    ap.add_argument(
        "--overload",
        action="store_true",
        help="overload mode: a step at --clean-rate, then one at twice it (--seconds each)",
    )
    ap.add_argument("--clean-rate", type=float, default=2500.0, help="the highest clean rate")
    ap.add_argument(
        "--baseline", metavar="DIR", help="overload mode: also run the engine of this checkout"
    )
    ap.add_argument(
        "--media", choices=("relay",), help="anchor every call's media with a relay process"
    )
    ap.add_argument(
        "--limits",
        action="store_true",
        help="count every call in the shared limits store (caps and the marketing rule)",
    )
    ap.add_argument(
        "--api-load",
        type=float,
        metavar="N",
        help="run each step without and then with the control API (started by ansim serve)"
        " binding N axb bindings/s from a pool and unbinding N/s (bench/api_load.py)",
    )
    ap.add_argument("--api-numbers", type=int, default=10_000, help="numbers of the API's pool")
    ap.add_argument("--api-connections", type=int, default=32, help="the load's connections")
    ap.add_argument(
        "--api-live", type=int, default=2000, help="bindings the load makes before it unbinds"
    )
    ap.add_argument(
        "--pairs", type=int, default=1,
        help="with --api-load: run each rate's idle and loaded steps this many times, in turn, "
        "and print each latency pooled over all idle and all loaded steps",
    )  # fmt: skip
    cpu_choices = ("b2bua", "load", "any")
    ap.add_argument(
        "--api-cpu", choices=cpu_choices, default="any",
        help="CPUs of the API processes: the B2BUA's, SIPp's, or any (%(default)s)",
    )  # fmt: skip
    ap.add_argument(
        "--load-cpu", choices=cpu_choices, default="any",
        help="CPUs of the API load generator (%(default)s)",
    )  # fmt: skip
    ap.add_argument(
        "--load-nice", type=int, default=0,
        help="nice of the API load generator, which stands in for platforms on other hosts "
        "(%(default)s: it competes with the engine and SIPp for this host's CPUs as an equal)",
    )  # fmt: skip
    ap.add_argument(
        "--load-policy", choices=tuple(LOAD_POLICIES), default="normal",
        help="Linux scheduling policy of the API load generator (%(default)s; idle: it runs "
        "only on CPU time the engine and SIPp leave, as if it were on another host)",
    )  # fmt: skip
    ap.add_argument(
        "--api-scheduling", choices=tuple(LOAD_POLICIES), default="batch",
        help="the engine's api.scheduling (%(default)s)",
    )  # fmt: skip
    ap.add_argument(
        "--neighbour", choices=("spin", "memory"),
        help="instead of --api-load: run each step without and then with a process that is "
        "not ansim's busy at the idle policy on the load CPUs (spin: computing; memory: also "
        "writing 64 MiB), to tell what the API costs the calls from what a busy neighbouring "
        "CPU costs them on this host",
    )  # fmt: skip
    ap.add_argument(
        "--cdr-dir", metavar="DIR",
        help="put the engine's CDR file and its journal in a new folder under DIR (e.g. "
        "/dev/shm) instead of the work folder",
    )  # fmt: skip
    ap.add_argument(
        "--engine-scheduling", choices=("normal", "rr", "fifo"), default="normal",
        help="the engine's scheduling.policy (%(default)s; rr, fifo: its event loop runs at "
        "a real-time priority)",
    )  # fmt: skip
    args = ap.parse_args()
    global WIRE, KEEP
    WIRE, KEEP = args.wire, bool(args.keep)
    if args.scenarios:
        global SIPP_DIR
        SIPP_DIR = Path(args.scenarios).resolve()
    if args.trace:
        SIPP_TRACE.extend(
            ["-trace_err", "-error_file", "%s.err", "-trace_msg", "-message_file", "%s.msg"]
        )
    if args.loss or args.reorder:
        global NET
        capture = Path(args.capture).resolve() if args.capture else None
        with (
            LossyNet(args.loss, args.reorder, args.delay_ms, capture=capture) as net,
            net.entered(),
        ):
            NET = net
            print(
                f"network namespace {net.name}: {args.loss}% of UDP datagrams lost, "
                f"{args.reorder}% delayed {args.delay_ms[0]:g}-{args.delay_ms[1]:g} ms",
                flush=True,
            )
            run(args)
            NET = None
    else:
        run(args)


def run(args: argparse.Namespace) -> None:
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            PINNING["b2bua"] = {cpus[-1]}
            PINNING["load"] = set(cpus[:-1])
    if shutil.which("sipp") is None:
        raise SystemExit("sipp not found (Debian package sip-tester)")
    with tempfile.TemporaryDirectory(prefix="ansim-cps-") as tmp:
        work = Path(tmp)
        if args.keep:
            work = Path(args.keep).resolve()
            work.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        inj = build_store(work, args.bindings)
        b2bua_cpus, load_cpus = PINNING["b2bua"], PINNING["load"]
        print(
            f"map: {args.bindings} ax bindings built in {time.monotonic() - t0:.1f} s; {os.cpu_count()} CPUs"
            + (
                f"; B2BUA on CPU {sorted(b2bua_cpus)}, SIPp on CPU {sorted(load_cpus)}"
                if b2bua_cpus is not None and load_cpus is not None
                else ""
            ),
            flush=True,
        )
        if args.concurrent:
            memory(args, work, inj)
            return
        if args.overload:
            overload(args, work, inj)
            return
        results: dict[str, list[Step]] = {}
        peers = (
            ([] if args.only_peer else ["ansim"])
            + ([args.peer] if args.peer else [])
            + (["direct"] if args.direct else [])
        )
        for peer in peers:
            rates = args.peer_rates if peer == "sippy" else args.rates
            results[peer] = ramp(peer, args, work, inj, rates)
        print()
        best: dict[str, Step | None] = {}
        for peer, steps in results.items():
            clean = [s for s in steps if s.ok]
            top = max(clean, key=lambda s: s.achieved) if clean else None
            best[peer] = top
            if top is None:
                print(f"{peer:6} no clean step")
            else:
                print(
                    f"{peer:6} highest clean rate {top.achieved:7.1f} calls/s (offered {top.offered:.0f}), "
                    f"cpu {top.cpu_ms_per_call:.3f} ms/call, p99 INVITE->200 {top.p99_ms:.2f} ms"
                )
        a, b = best.get("ansim"), best.get(args.peer or "")
        if a is not None and b is not None:
            print(
                f"ratio ansim/{args.peer}: max clean CPS x{a.achieved / b.achieved:.1f}, "
                f"CPU per call x{b.cpu_ms_per_call / a.cpu_ms_per_call:.1f} less"
            )


if __name__ == "__main__":
    main()
