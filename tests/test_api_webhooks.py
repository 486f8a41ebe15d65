"""Webhooks over real HTTP: a receiver started by the test gets the tenant's events
signed with its secret, failed deliveries are retried with backoff until answered 2xx,
and what was queued survives a restart of the API process."""

from __future__ import annotations

import itertools
import socket
import time
from pathlib import Path
from typing import Any

import httpx
from api_helpers import ApiServer, party, pool_numbers
from webhook_receiver import Receiver

from api.app import housekeeping
from api.settings import ApiSettings, WebhookSettings
from api.webhooks import verify
from b2bua.cdr import CallRecord, CdrWriter
from sms_smpp.records import SmsRecords

SETTINGS = ApiSettings(webhooks=WebhookSettings(retry_min=0.3, retry_max=1.0, poll=0.05))
ALL = [
    "call.started",
    "call.ringing",
    "call.answered",
    "call.completed",
    "sms.received",
    "sms.delivered",
    "binding.expired",
]


def _setup(api: httpx.Client, url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    pool = {"name": "trips", "numbers": [{"number": n} for n in pool_numbers(5)]}
    api.post("/v1/pools", json=pool).raise_for_status()
    made = api.post(
        "/v1/bindings",
        json={"kind": "axb", "pool": "trips", "a": party(1), "b": party(2), "out_id": "o-1"},
    )
    made.raise_for_status()
    hook = api.post("/v1/webhooks", json={"url": url, "events": ALL})
    assert hook.status_code == 201, hook.text
    return made.json(), hook.json()


def _call(server: ApiServer, cdr: Path, binding: dict[str, Any], n: int) -> str:
    """A call through ``binding`` as the engine reports it: its events and its record."""
    assert server.store is not None
    now = time.time()
    call_id = f"call-{n}@127.0.0.2"
    writer = CdrWriter(cdr, attribute=server.store.attribution)
    writer.event("call.started", call_id, binding["id"], now - 10, {"virtual": binding["x"]})
    writer.event("call.ringing", call_id, binding["id"], now - 9, {})
    writer.event("call.answered", call_id, binding["id"], now - 8, {})
    record = CallRecord(
        call_id, "b@ansim", "bridge", "axb", "A->B", binding["x"], party(1), party(2),
        binding["x"], binding["id"], "carrier", "udp", "127.0.0.2", 5060, "carrier",
        now - 10, now - 9, now - 8, now, 1000, 2000, 8000, 200, 16, "caller", "caller_bye",
    )  # fmt: skip
    writer.add(record)
    writer.close()
    return record.record_id


def _signed(secret: str, got: Any) -> bool:
    h = got.headers
    return verify(secret, h["ansim-timestamp"], h["ansim-signature"], got.body)


def test_events_signed_and_retried_until_answered(tmp_path: Path) -> None:
    cdr = tmp_path / "cdr.sqlite"
    with (
        Receiver() as receiver,
        ApiServer(tmp_path / "numbers.lmdb", settings=SETTINGS, cdr=cdr) as server,
        server.client(server.tenant("acme")) as api,
    ):
        binding, hook = _setup(api, receiver.url)
        receiver.status = 503
        record_id = _call(server, cdr, binding, 1)
        failed = receiver.wait("call.completed", 2)
        receiver.status = 200
        got = receiver.wait("call.completed", len(failed) + 1)
        time.sleep(1.5)  # answered 2xx: never sent again
        assert len(receiver.of_type("call.completed")) == len(got)
        attempts = [int(r.headers["ansim-delivery-attempt"]) for r in got]
        assert attempts == list(range(1, len(got) + 1))
        # Backoff: the second retry waited at least about retry_min (jitter: half of it).
        gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
        assert all(gap >= 0.14 for gap in gaps), gaps
        assert {r.headers["ansim-event-id"] for r in got} == {f"ev_{record_id}"}
        for r in got:
            assert _signed(hook["secret"], r)
            assert not verify("whsec_other", r.headers["ansim-timestamp"],
                              r.headers["ansim-signature"], r.body)  # fmt: skip
            assert not verify(hook["secret"], r.headers["ansim-timestamp"],
                              r.headers["ansim-signature"], r.body + b" ")  # fmt: skip
        event = got[-1].event
        assert event["type"] == "call.completed" and event["tenant"] == "acme"
        assert (event["binding_id"], event["out_id"], event["pool"]) == (
            binding["id"],
            "o-1",
            "trips",
        )
        cdr_row = event["data"]["cdr"]
        assert cdr_row["record_id"] == record_id
        assert (cdr_row["caller"], cdr_row["callee"], cdr_row["status"]) == (
            party(1),
            party(2),
            200,
        )
        assert cdr_row["duration_ms"] == 8000 and cdr_row["out_id"] == "o-1"
        for kind in ("call.started", "call.ringing", "call.answered"):
            tries = receiver.wait(kind)  # refused with 503 too before the receiver took them
            assert len({r.headers["ansim-event-id"] for r in tries}) == 1
            assert all(_signed(hook["secret"], r) for r in tries)
            assert tries[-1].event["data"]["call_id"] == "call-1@127.0.0.2"
        # An SMS through the binding: received, then delivered (the upstream's receipt).
        assert server.store is not None
        sms = SmsRecords(str(cdr), attribute=server.store.attribution)
        now = time.time()
        sms.accepted(("sms-1", "mt", "carrier", party(1), binding["x"], party(2), binding["x"],
                      binding["id"], 0, 5, None, now, "queued", None))  # fmt: skip
        sms.submitted("sms-1", "upstream-a", "u-1", now)
        sms.receipt("sms-1", "delivered", 2, now + 1)
        sms.close()
        for kind in ("sms.received", "sms.delivered"):
            tries = receiver.wait(kind)
            assert all(_signed(hook["secret"], r) for r in tries)
            event = tries[-1].event
            assert (event["binding_id"], event["out_id"]) == (binding["id"], "o-1")
            assert event["data"]["sms"]["id"] == "sms-1"
        assert receiver.wait("sms.delivered")[-1].event["data"]["sms"]["status"] == "delivered"
        # A binding that expires: binding.expired once the housekeeping removed it.
        short = api.post(
            "/v1/bindings",
            json={"kind": "axb", "pool": "trips", "a": party(3), "b": party(4), "expires_in": 1},
        ).json()
        time.sleep(1.2)
        server.write(housekeeping(server.context, None))
        (expired,) = receiver.wait("binding.expired")
        assert expired.event["binding_id"] == short["id"]
        assert expired.event["data"]["x"] == short["x"]
        # A rotated secret signs from then on.
        rotated = api.post(f"/v1/webhooks/{hook['id']}/secret").json()["secret"]
        _call(server, cdr, binding, 2)
        last = receiver.wait("call.completed", len(got) + 1)[-1]
        assert _signed(rotated, last) and not _signed(hook["secret"], last)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def test_queued_events_survive_a_restart_while_the_receiver_is_down(tmp_path: Path) -> None:
    cdr, store = tmp_path / "cdr.sqlite", tmp_path / "numbers.lmdb"
    port = _free_port("127.0.0.3")
    url = f"http://127.0.0.3:{port}/events"
    with ApiServer(store, settings=SETTINGS, cdr=cdr) as server:
        token = server.tenant("acme")
        with server.client(token) as api:
            binding, hook = _setup(api, url)
            record_id = _call(server, cdr, binding, 1)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # queued and tried at least once
                text = api.get("/metrics").text
                if 'ansim_api_webhook_deliveries_total{result="failed"}' in text:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("no failed delivery attempt")
    with (
        Receiver(port=port) as receiver,
        ApiServer(store, settings=SETTINGS, cdr=cdr) as server,
    ):
        got = receiver.wait("call.completed")
        assert got[0].headers["ansim-event-id"] == f"ev_{record_id}"
        assert int(got[0].headers["ansim-delivery-attempt"]) >= 2
        assert _signed(hook["secret"], got[0])
        assert got[0].event["data"]["cdr"]["record_id"] == record_id
        # Every event of the call, each once the receiver answered (no re-queueing).
        time.sleep(1.0)
        kinds = sorted(r.headers["ansim-event-type"] for r in receiver.got)
        assert kinds == ["call.answered", "call.completed", "call.ringing", "call.started"]
