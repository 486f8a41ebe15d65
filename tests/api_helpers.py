"""A real API server for tests: uvicorn serving ``create_app`` on a real store, in a
thread of the test process, on a loopback socket the test binds; plus tenants and keys."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from api.app import create_app
from api.context import ApiContext
from api.settings import ApiSettings
from b2bua.cdr import CallRecord, CdrWriter
from sms_smpp.records import SmsRecords
from translate.store import Store, Transaction

ALL_SCOPES = frozenset(
    {
        "bindings:read",
        "bindings:write",
        "pools:read",
        "pools:write",
        "metrics:read",
        "records:read",
        "stats:read",
        "webhooks:write",
    }
)
#: Pool numbers granted to the test tenants: +8250710000000 ... (+82507100 prefix).
GRANT = "+82507100"


def pool_numbers(count: int, start: int = 0) -> list[str]:
    return [f"{GRANT}{n:05d}" for n in range(start, start + count)]


def party(n: int) -> str:
    return f"+8210{n:08d}"


class ApiServer:
    """uvicorn on ``create_app(ApiContext.open(store))``; use as a context manager."""

    def __init__(
        self,
        path: Path,
        *,
        settings: ApiSettings | None = None,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        cdr: Path | None = None,
        fast: bool = True,
    ) -> None:
        self.path = path
        self.fast = fast
        self.cdr = cdr
        self.settings = settings
        self.clock = clock
        self.host = host
        self.store: Store | None = None
        self.ctx: ApiContext | None = None
        self.app: Any = None
        self.base_url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ApiServer:
        self.store = Store(self.path, map_size=256 << 20)
        self.ctx = ApiContext.open(
            self.store,
            self.settings,
            clock=self.clock,
            cdr=None if self.cdr is None else str(self.cdr),
            sms=None if self.cdr is None else str(self.cdr),
        )
        self.app = app = create_app(self.ctx, fast=self.fast)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        port = sock.getsockname()[1]
        self.base_url = f"http://{self.host}:{port}"
        config = uvicorn.Config(
            app,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
            proxy_headers=False,
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
            assert not self._thread.is_alive(), "API server did not stop"
        if self.store is not None:
            self.store.close()

    @property
    def context(self) -> ApiContext:
        assert self.ctx is not None
        return self.ctx

    def write(self, work: Callable[[Transaction], Any]) -> Any:
        """Run ``work`` through the server's own store writer."""
        return self.context.writer.call(work, timeout=10)

    def tenant(
        self,
        tenant: str,
        scopes: frozenset[str] = ALL_SCOPES,
        *,
        numbers: tuple[str, ...] = (GRANT,),
        name: str = "test",
    ) -> str:
        """Create (or update) ``tenant`` with number grants and a key; the key's token."""
        from api.control import Tenant

        control = self.context.control

        def work(t: Transaction) -> str:
            found = control.ensure_tenant(t.txn, tenant, t.now)
            control.put_tenant(t.txn, Tenant(tenant, found.created, numbers))
            _, token = control.create_key(t.txn, tenant, scopes, name, t.now)
            return str(token)

        token: str = self.write(work)
        return token

    def client(self, token: str | None) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=20)


def write_records(server: ApiServer, path: Path, binding: dict[str, Any]) -> tuple[str, str]:
    """One call record and one SMS record of acme's binding, written by the engine's own
    writers (owners found in the store as the engine finds them)."""
    store = server.store
    assert store is not None
    now = time.time()
    cdr = CdrWriter(path, attribute=store.attribution)
    record = CallRecord(
        "walk-call@127.0.0.2", "b-walk@ansim", "bridge", "axb", "A->B", binding["x"],
        party(1), party(2), binding["x"], binding["id"], "carrier", "udp", "127.0.0.2", 5060,
        "carrier", now - 60, now - 58, now - 55, now, 2000, 5000, 55000, 200, 16, "caller",
        "caller_bye",
    )  # fmt: skip
    cdr.add(record)
    cdr.close()
    sms = SmsRecords(str(path), attribute=store.attribution)
    sms.accepted(("walk-sms-1", "mt", "carrier", party(1), binding["x"], party(2),
                  binding["x"], binding["id"], 0, 5, None, now, "queued", None))  # fmt: skip
    sms.close()
    return record.record_id, "walk-sms-1"
