"""The control API as ``ansim serve`` runs it, driven by a real HTTP client: an axb
binding made from a pool through the API carries SIPp calls both ways and refuses a third
party; unbinding makes the next call a 404; a webhook receiver started by the test gets
the signed ``call.completed`` with the call's record, and gets the one of a call made
while it was down after the engine was restarted (the outbox is on disk)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from call_env import CALLER, PARTY_A, PARTY_B, Ansim, Party, Sipp, leaks, trunk
from conftest import free_port
from engine_process import ANSIM
from media_helpers import relay_media
from webhook_receiver import Receiver

from api.webhooks import WebhookTables, verify
from translate.store import Store

POOL = [f"+8250710{n:05d}" for n in range(1, 6)]  # national 0507-10-nnnnn


def _national(x: str) -> str:
    return "0" + x[3:]


def _engine(workdir: Path, callee_port: int, api_port: int) -> Ansim:
    trunks = [trunk("t1", callee_port)]
    config = {"api": {"listen": f"127.0.0.1:{api_port}"}}
    return Ansim(
        workdir,
        trunks=trunks,
        routes=[{"prefix": "+82", "trunks": ["t1"]}],
        numbers={"ax": []},
        config=config,
    )


def _wait_api(base: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the API at {base} did not answer")


def _cli(config: Path, *args: str) -> str:
    done = subprocess.run(
        [str(ANSIM), *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _token(config: Path) -> str:
    _cli(config, "tenants", "set", "acme", "--numbers", "+82507")
    scopes = ["bindings:read", "bindings:write", "pools:write", "pools:read",
              "webhooks:write", "records:read", "metrics:read"]  # fmt: skip
    out = _cli(config, "keys", "create", "--tenant", "acme", *(f"--scope={s}" for s in scopes))
    line = next(x for x in out.splitlines() if x.startswith("token"))
    return line.rsplit(" ", 1)[1]


def _call(
    sipp: Sipp, engine: Ansim, x: str, caller: Party, uac: str, callee: Party | None, port: int
) -> Any:
    """One SIPp call from ``caller`` to ``x``; with ``callee``, SIPp answers as it on the
    trunk's port and must be reached. Both SIPp ends must see their whole scenario."""
    uas = None
    if callee is not None:
        uas = sipp.start("call_uas_answer", port=port, keys=callee.sipp_keys("callee"),
                         timeout=15, extra=["-d", "100"])  # fmt: skip
    run = sipp.start(
        uac,
        port=free_port(),
        remote=engine.addr,
        service=_national(x),
        keys=caller.sipp_keys("caller"),
        timeout=15,
        call_id=f"{caller.national}-%u-%p@%s",
        extra=["-d", "100"],
    )
    assert run.wait(25) == 0, f"{run}\n{engine.log_text()}"
    if uas is not None:
        assert uas.wait(25) == 0, f"{uas}\n{engine.log_text()}"
        assert not leaks(uas.received(), caller)
        assert not leaks(run.received(), callee)
    return run


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _signed(secret: str, got: Any) -> bool:
    h = got.headers
    return verify(secret, h["ansim-timestamp"], h["ansim-signature"], got.body)


@pytest.mark.timeout(240)
def test_bind_call_unbind_and_signed_durable_webhooks(tmp_path: Path) -> None:
    callee_port, api_port, hook_port = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{api_port}"
    engine = _engine(tmp_path / "ansim", callee_port, api_port)
    config = engine.write_config()
    token = _token(config)
    headers = {"Authorization": f"Bearer {token}"}
    with (
        Sipp(_dir(tmp_path / "sipp")) as sipp,
        Receiver(port=hook_port) as receiver,
        engine,
        httpx.Client(base_url=base, headers=headers, timeout=10) as api,
    ):
        _wait_api(base)
        # The API process runs at a lower priority than the engine (api.nice, 10, and
        # the batch policy).
        apis = [pid for pid in _children(engine.pid) if b" api " in _cmdline(pid)]
        assert len(apis) == 1 and _nice(apis[0]) == _nice(engine.pid) + 10, apis
        assert os.sched_getscheduler(apis[0]) == os.SCHED_BATCH
        assert os.sched_getscheduler(engine.pid) == os.SCHED_OTHER
        pool = {"name": "trips", "numbers": [{"number": n} for n in POOL]}
        assert api.post("/v1/pools", json=pool).status_code == 201
        made = api.post(
            "/v1/bindings",
            json={"kind": "axb", "pool": "trips", "a": PARTY_A.e164, "b": PARTY_B.e164,
                  "out_id": "trip-1"},
        )  # fmt: skip
        assert made.status_code == 201, made.text
        binding = made.json()
        x = binding["x"]
        assert x in POOL
        hook = api.post("/v1/webhooks", json={"url": receiver.url, "events": ["call.completed",
                        "call.started", "call.answered", "call.ringing"]})  # fmt: skip
        assert hook.status_code == 201, hook.text
        secret = hook.json()["secret"]
        # A reaches B, B reaches A, a third party is refused.
        _call(sipp, engine, x, PARTY_A, "call_uac_basic", PARTY_B, callee_port)
        _call(sipp, engine, x, PARTY_B, "call_uac_basic", PARTY_A, callee_port)
        third = _call(sipp, engine, x, CALLER, "call_uac_reject_403", None, callee_port)
        assert third.received_statuses("INVITE") == [100, 403]
        completed = receiver.wait("call.completed", 2)
        for got in completed:
            assert _signed(secret, got)
            event = got.event
            assert (event["tenant"], event["binding_id"], event["out_id"], event["pool"]) == (
                "acme", binding["id"], "trip-1", "trips",
            )  # fmt: skip
        cdrs = sorted((g.event["data"]["cdr"]["caller"], g.event["data"]["cdr"]["callee"])
                      for g in completed)  # fmt: skip
        assert cdrs == sorted([(PARTY_A.e164, PARTY_B.e164), (PARTY_B.e164, PARTY_A.e164)])
        assert all(g.event["data"]["cdr"]["status"] == 200 for g in completed)
        for kind in ("call.started", "call.ringing", "call.answered"):
            assert len({r.headers["ansim-event-id"] for r in receiver.wait(kind, 2)}) == 2
        # The third party's refusal is no event of the tenant's (X is in no pair of it).
        time.sleep(1.0)
        assert len({g.headers["ansim-event-id"] for g in receiver.of_type("call.completed")}) == 2
    # The receiver is down: a call's event is queued and tried, the engine restarted.
    engine = _engine(tmp_path / "ansim", callee_port, api_port)
    with (
        Sipp(_dir(tmp_path / "sipp2")) as sipp,
        engine,
        httpx.Client(base_url=base, headers=headers, timeout=10) as api,
    ):
        _wait_api(base)
        _call(sipp, engine, x, PARTY_A, "call_uac_basic", PARTY_B, callee_port)
        record = engine.cdr_rows(expect=4)[-1]
        # the call's other events fail first: wait for call.completed's own attempt
        deadline = time.monotonic() + 15
        while _attempts(engine.store_path, f"ev_{record['record_id']}") < 1:
            assert time.monotonic() < deadline, (
                "call.completed not tried while the receiver was down"
            )
            time.sleep(0.2)
        assert 'ansim_api_webhook_deliveries_total{result="failed"}' in api.get("/metrics").text
    engine = _engine(tmp_path / "ansim", callee_port, api_port)
    with (
        Receiver(port=hook_port) as receiver,
        Sipp(_dir(tmp_path / "sipp3")) as sipp,
        engine,
        httpx.Client(base_url=base, headers=headers, timeout=10) as api,
    ):
        _wait_api(base)
        got = [g for g in receiver.wait("call.completed") if
               g.headers["ansim-event-id"] == f"ev_{record['record_id']}"]  # fmt: skip
        deadline = time.monotonic() + 20
        while not got:
            assert time.monotonic() < deadline, receiver.got
            time.sleep(0.1)
            got = [g for g in receiver.of_type("call.completed")
                   if g.headers["ansim-event-id"] == f"ev_{record['record_id']}"]  # fmt: skip
        assert _signed(secret, got[0])
        assert int(got[0].headers["ansim-delivery-attempt"]) >= 2
        assert got[0].event["data"]["cdr"]["record_id"] == record["record_id"]
        # Unbind: the next call to X is a 404.
        assert api.delete(f"/v1/bindings/{binding['id']}").status_code == 204
        gone = _call(sipp, engine, x, PARTY_A, "call_uac_reject_404", None, callee_port)
        assert gone.received_statuses("INVITE") == [100, 404]


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # exited; reaped by whoever it was handed to, or not yet


def test_an_engine_that_dies_takes_its_api_and_relay_processes_with_it(tmp_path: Path) -> None:
    api_port = free_port()
    media, _ = relay_media(tmp_path)
    engine = Ansim(
        tmp_path / "ansim",
        trunks=[trunk("t1", free_port())],
        routes=[{"prefix": "+82", "trunks": ["t1"]}],
        numbers={"ax": []},
        config={"api": {"listen": f"127.0.0.1:{api_port}"}},
        media=media,
    )
    with engine:
        _wait_api(f"http://127.0.0.1:{api_port}")
        children = _children(engine.pid)
        api = [pid for pid in children if b" api " in _cmdline(pid)]
        relays = [pid for pid in children if pid not in api]
        assert len(api) == 1 and len(relays) == 1, [_cmdline(pid) for pid in children]
        os.kill(engine.pid, signal.SIGKILL)  # no SIGTERM the engine could pass on
        try:
            deadline = time.monotonic() + 15
            while not all(_gone(pid) for pid in api + relays):
                assert time.monotonic() < deadline, [(p, _cmdline(p)) for p in api + relays]
                time.sleep(0.1)
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=2)
        finally:
            for pid in api + relays:
                if not _gone(pid):
                    os.kill(pid, signal.SIGKILL)


def _attempts(store_path: Path, event_id: str) -> int:
    """Failed attempts so far of the queued deliveries of ``event_id`` (0: not queued,
    or not tried yet), read from the store's delivery table."""
    with Store(store_path, readonly=True) as store:
        tables = WebhookTables(store)
        with store.reader() as txn:
            tried = [d.attempts for d in tables.due(txn, 1e12, 1_000_000) if d.event_id == event_id]
    return max(tried, default=0)


def _policy(tid: int) -> tuple[int, int]:
    return os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority


def test_a_real_time_event_loop_leaves_the_engines_threads_and_children_normal(
    tmp_path: Path,
) -> None:
    """``scheduling: {policy: rr}``: the thread that handles the SIP messages runs at the
    real-time priority, with reset-on-fork, and nothing it starts does: not its other
    threads (record writers, store jobs), not the API processes (batch, as configured)."""
    api_port = free_port()
    engine = Ansim(
        tmp_path / "ansim",
        trunks=[trunk("t1", free_port())],
        routes=[{"prefix": "+82", "trunks": ["t1"]}],
        numbers={"ax": []},
        config={
            "api": {"listen": f"127.0.0.1:{api_port}"},
            "scheduling": {"policy": "rr", "priority": 12},
        },
    )
    with engine:
        _wait_api(f"http://127.0.0.1:{api_port}")
        tids = [int(t.name) for t in Path(f"/proc/{engine.pid}/task").iterdir()]
        assert _policy(engine.pid) == (os.SCHED_RR | os.SCHED_RESET_ON_FORK, 12)
        others = {tid: _policy(tid) for tid in tids if tid != engine.pid}
        assert others and set(others.values()) == {(os.SCHED_OTHER, 0)}, others
        api = [pid for pid in _children(engine.pid) if b" api " in _cmdline(pid)]
        assert len(api) == 1 and _policy(api[0]) == (os.SCHED_BATCH, 0)
        api_threads = [int(t.name) for t in Path(f"/proc/{api[0]}/task").iterdir()]
        assert {_policy(tid)[0] for tid in api_threads} == {os.SCHED_BATCH}
        assert "scheduling" not in engine.log_text()


def test_an_engine_refused_a_real_time_policy_says_so_and_serves(tmp_path: Path) -> None:
    """Without CAP_SYS_NICE the engine keeps the normal policy, logs why, and serves."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is missing"
    engine = Ansim(
        tmp_path / "ansim",
        trunks=[trunk("t1", free_port())],
        routes=[{"prefix": "+82", "trunks": ["t1"]}],
        numbers={"ax": []},
        config={"scheduling": {"policy": "fifo"}},
        metrics=True,
        wrap=[setpriv, "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", "--"],
    )
    with engine:
        assert _policy(engine.pid) == (os.SCHED_OTHER, 0)
        log = engine.log_text()
    assert "the event loop keeps the normal policy, not fifo: not permitted" in log, log
