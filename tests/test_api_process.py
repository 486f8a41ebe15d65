"""``ansim api`` as a process: configuration, the first admin key from the command line,
serving, a clean stop on SIGTERM; and requests answered while the store's write lock is
held by another process (a map load, a repack)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_helpers import party, pool_numbers
from conftest import free_port
from pydantic import ValidationError

from api.settings import ApiSettings
from b2bua.api_process import POLICIES, ApiProcesses


def ansim(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "b2bua.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def token_of(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout.split("token (shown only now): ")[1].strip()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    config = tmp_path / "config"
    config.mkdir()
    (config / "ansim.yaml").write_text(
        textwrap.dedent(
            f"""
            numbers:
              store: {tmp_path / "numbers.lmdb"}
            api:
              listen: 127.0.0.1:{free_port()}
              idempotency_hours: 2
            """
        )
    )
    return tmp_path


class Process:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        text = (folder / "config" / "ansim.yaml").read_text()
        self.url = "http://" + text.split("listen: ")[1].split()[0]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "b2bua.cli", "api", "--config", "config"],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.proc.communicate()[0]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "ansim api did not start"
            time.sleep(0.1)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return self.proc.returncode, out


@pytest.fixture
def process(folder: Path) -> Iterator[Process]:
    # The first admin key, and a tenant's grant, from the command line.
    admin = token_of(
        ansim("keys", "create", "--tenant", "operator", "--scope", "admin", cwd=folder)
    )
    (folder / "admin.token").write_text(admin)
    out = ansim("tenants", "set", "acme", "--numbers", "+82507100", cwd=folder)
    assert out.returncode == 0, out.stderr
    running = Process(folder)
    try:
        yield running
    finally:
        running.stop()


def test_serves_and_stops_on_sigterm(folder: Path, process: Process) -> None:
    admin = (folder / "admin.token").read_text()
    with httpx.Client(base_url=process.url, headers={"Authorization": f"Bearer {admin}"}) as api:
        key = api.post(
            "/v1/admin/keys", json={"tenant": "acme", "scopes": ["pools:write", "bindings:write"]}
        )
        assert key.status_code == 201, key.text
    with httpx.Client(
        base_url=process.url, headers={"Authorization": f"Bearer {key.json()['token']}"}
    ) as api:
        made = api.post(
            "/v1/pools", json={"name": "trips", "numbers": [{"number": n} for n in pool_numbers(3)]}
        )
        assert made.status_code == 201, made.text
        bound = api.post(
            "/v1/bindings", json={"kind": "axb", "pool": "trips", "a": party(1), "b": party(2)}
        )
        assert bound.status_code == 201, bound.text
        assert httpx.get(f"{process.url}/openapi.json").json()["openapi"].startswith("3.1")
    status, out = process.stop()
    assert status == 0, out
    assert party(1) not in out and party(2) not in out  # no real number in the log
    looked = ansim(
        "numbers",
        "lookup",
        bound.json()["x"],
        "--from",
        party(1),
        "--store",
        "numbers.lmdb",
        cwd=folder,
    )
    assert looked.returncode == 0, looked.stdout + looked.stderr


def test_bad_configuration_is_refused_with_its_position(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "ansim.yaml").write_text("numbers:\n  store: s\napi:\n  listn: 127.0.0.1:1\n")
    out = ansim("api", "--config", "config", cwd=tmp_path)
    assert out.returncode == 2
    assert "ansim.yaml:4:3: unknown-field" in out.stderr, out.stderr
    (config / "ansim.yaml").write_text("api:\n  listen: nowhere\n")
    out = ansim("api", "--config", "config", cwd=tmp_path)
    assert out.returncode == 2 and "ansim.yaml:2:" in out.stderr, out.stderr
    out = ansim("api", "--config", "config", "--listen", "localhost", cwd=tmp_path)
    assert out.returncode == 2


HOLD_LOCK = """
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=32, map_size=32 << 30)
txn = env.begin(write=True)
print("held", flush=True)
sys.stdin.readline()
txn.abort()
"""


def test_requests_are_answered_while_the_write_lock_is_held(folder: Path, process: Process) -> None:
    admin = (folder / "admin.token").read_text()
    with httpx.Client(base_url=process.url, headers={"Authorization": f"Bearer {admin}"}) as api:
        token = api.post(
            "/v1/admin/keys",
            json={"tenant": "acme", "scopes": ["pools:write", "pools:read", "bindings:write"]},
        ).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=process.url, headers=headers, timeout=30) as api:
        api.post(
            "/v1/pools", json={"name": "trips", "numbers": [{"number": n} for n in pool_numbers(3)]}
        )
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder / "numbers.lmdb")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        answers: list[httpx.Response] = []

        def bind() -> None:
            with httpx.Client(base_url=process.url, headers=headers, timeout=60) as api:
                body = {"kind": "axb", "pool": "trips", "a": party(1), "b": party(2)}
                answers.append(api.post("/v1/bindings", json=body))

        waiting = threading.Thread(target=bind)
        waiting.start()
        time.sleep(0.5)
        assert not answers  # the bind waits for the lock...
        with httpx.Client(base_url=process.url, headers=headers, timeout=5) as api:
            # ...and meanwhile the loop answers: health, key checks, reads.
            for _ in range(20):
                assert api.get("/healthz").status_code == 200
                assert api.get("/v1/pools/trips").json()["bindings"] == 0
        assert not answers
        holder.stdin.write("\n")
        holder.stdin.flush()
        waiting.join(30)
        assert [a.status_code for a in answers] == [201]
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(10)


@pytest.mark.parametrize("scheduling", ["normal", "batch", "idle"])
def test_each_scheduling_policy_and_nice_reach_the_process(tmp_path: Path, scheduling: str) -> None:
    # What ApiProcesses runs in each child before it starts: a real child process here.
    for nice in (0, 7):
        procs = ApiProcesses(tmp_path, 1, nice=nice, scheduling=scheduling)
        child = subprocess.Popen(["sleep", "30"], preexec_fn=procs._lower)
        try:
            assert os.sched_getscheduler(child.pid) == POLICIES[scheduling]
            assert (
                os.getpriority(os.PRIO_PROCESS, child.pid)
                == os.getpriority(os.PRIO_PROCESS, 0) + nice
            )
        finally:
            child.kill()
            child.wait(5)
    assert POLICIES == {"normal": os.SCHED_OTHER, "batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE}


def test_an_unknown_scheduling_policy_is_refused() -> None:
    with pytest.raises(ValidationError, match="scheduling"):
        ApiSettings.model_validate({"scheduling": "realtime"})
