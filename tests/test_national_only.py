"""A national-only number end to end: China's number-protection range 700 (15-digit
national numbers, 17 digits with +86, longer than E.164 allows) as the virtual number X
of a map binding.

Calls: SIPp dials X through ``ansim serve`` in every form a carrier writes it (national,
``+86``, ``0086``, with visual separators, ``phone-context``, ``tel:``), and the real
callee's SIPp is reached, shown X in its national form (``700...``) or, toward a trunk of
another country, with that trunk's international prefix (``0086700...``), never with
"+" as if it were E.164. SMS: smpplib texts X with TON national and TON international
through ``ansim smpp run``, and the node-smpp SMSC upstream gets the message for the
real recipient, from X with TON national.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import smpplib.consts
import smpplib.smpp
import yaml
from call_env import Ansim, Party, Sipp, leaks
from conftest import free_port
from smpp_helpers import Esme, NodeSmsc, Proc, digits, node_available, wait_for, write_config

from translate.numbers import CN
from translate.reload import reload_maps
from translate.store import Store

X = "+86700123456789012"  # stored (canonical) form
X_NATIONAL = "700123456789012"
# Chinese mobiles chosen so that no run of their digits is part of X or of each other.
CALLER = Party("+8613966602468")
CALLEE = Party("+8618844413579")
CN_PLAN = {"country_code": "86", "trunk_prefix": "0", "international_prefix": "00"}
KR_PLAN = {"country_code": "82", "trunk_prefix": "0", "international_prefix": "00"}


def number_map() -> dict[str, Any]:
    return {
        "version": 1,
        "plan": CN_PLAN,
        "ax": [{"id": "cn-700-shop", "x": "700 1234 5678 9012", "a": "188 4441 3579"}],
    }


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    with Sipp(tmp_path) as runner:
        yield runner


def _engine(tmp_path: Path, callee_port: int, callee_plan: dict[str, str]) -> Ansim:
    """ansim whose carrier trunk (every loopback address) writes numbers the Chinese way,
    and whose callee trunk (no source) uses ``callee_plan``."""
    carrier = {
        "name": "carrier-cn",
        "accept_from": ["127.0.0.0/8"],
        "address": f"127.0.0.1:{free_port()}",
        "plan": CN_PLAN,
        "invite_timeout": 2.0,
    }
    callee = {
        "name": "callee",
        "accept_from": [],
        "address": f"127.0.0.1:{callee_port}",
        "plan": callee_plan,
        "invite_timeout": 2.0,
    }
    routes = [{"prefix": "+86", "trunks": ["callee"]}]
    return Ansim(tmp_path / "ansim", trunks=[carrier, callee], routes=routes, numbers=number_map())


def _forms(addr: str) -> list[str]:
    """Request-URIs for X in every form a carrier may write it."""
    return [
        f"sip:{X_NATIONAL}@{addr}",
        f"sip:{X_NATIONAL}@{addr};user=phone",
        f"sip:+86{X_NATIONAL}@{addr};user=phone",
        f"sip:0086{X_NATIONAL}@{addr}",
        f"sip:86{X_NATIONAL}@{addr}",
        f"sip:700-1234-5678-9012@{addr};user=phone",
        f"sip:%2B86{X_NATIONAL}@{addr}",
        f"sip:{X_NATIONAL};phone-context=+86@{addr};user=phone",
        "tel:+86-700-1234-5678-9012",
        f"tel:{X_NATIONAL};phone-context=+86",
    ]


def _call(sipp: Sipp, ansim: Ansim, ruri: str, uas_port: int) -> tuple[Any, Any]:
    uas = sipp.start(
        "call_uas_answer",
        port=uas_port,
        keys=CALLEE.sipp_keys("callee"),
        timeout=15,
        extra=["-d", "100"],
    )
    uac = sipp.start(
        "call_uac_ruri",
        port=free_port(),
        remote=ansim.addr,
        keys={"ruri": ruri, **CALLER.sipp_keys("caller")},
        timeout=15,
        call_id="cn-%u-%p@%s",
        extra=["-d", "100"],
    )
    rc = (uac.wait(25), uas.wait(25))
    assert rc == (0, 0), (
        f"{ruri}: SIPp exit codes {rc}\n{uac.report()}\n{uas.report()}\n{ansim.log_text()}"
    )
    return uac, uas


@pytest.mark.parametrize(
    ("callee_plan", "presented"),
    [(CN_PLAN, X_NATIONAL), (KR_PLAN, "0086" + X_NATIONAL)],
    ids=["callee-trunk-in-china", "callee-trunk-elsewhere"],
)
def test_calls_to_a_700_number_in_every_form_reach_the_callee(
    sipp: Sipp, tmp_path: Path, callee_plan: dict[str, str], presented: str
) -> None:
    uas_port = free_port()
    with _engine(tmp_path, uas_port, callee_plan) as ansim:
        forms = _forms(ansim.addr)
        for n, ruri in enumerate(forms, 1):
            uac, uas = _call(sipp, ansim, ruri, uas_port)
            assert uac.received_statuses()[-1] == 200, ruri
            invite = next(m for m in uas.received() if m.method == "INVITE")
            # The callee's trunk gets the real callee, and X as the caller, never "+86700...".
            assert invite.first_line.startswith(f"INVITE sip:{CALLEE.e164}@"), invite.first_line
            for header in ("From", "P-Asserted-Identity"):
                assert f"sip:{presented}@" in invite.header(header), (ruri, invite.header(header))
            assert "+86700" not in invite.text and "%2B86700" not in invite.text, ruri
            assert not leaks(uas.received(), CALLER), ruri
            assert not leaks(uac.received(), CALLEE), ruri
            rows = ansim.cdr_rows(expect=n)
            assert len(rows) == n, rows
            row = rows[-1]
            assert (row["virtual"], row["caller"], row["callee"]) == (X, CALLER.e164, CALLEE.e164)
            assert (row["status"], row["binding_id"], row["presented"]) == (200, "cn-700-shop", X)
        assert ansim.stop() == 0


def test_a_700_number_cut_short_or_too_long_is_refused(sipp: Sipp, tmp_path: Path) -> None:
    uas_port = free_port()
    with _engine(tmp_path, uas_port, CN_PLAN) as ansim:
        for ruri in (f"sip:{X_NATIONAL[:-1]}@{ansim.addr}", f"sip:{X_NATIONAL}1@{ansim.addr}"):
            uac = sipp.start(
                "call_uac_reject_404",
                port=free_port(),
                remote=ansim.addr,
                service=ruri.split(":", 1)[1].split("@", 1)[0],
                keys=CALLER.sipp_keys("caller"),
                timeout=10,
            )
            assert uac.wait(20) == 0, uac.report()
        rows = ansim.cdr_rows(expect=2)
        assert [r["reason"] for r in rows] == ["bad_number", "bad_number"]


# -- SMS ------------------------------------------------------------------------------------

SENDER = "+8613977702468"
RECIPIENT = "+8618855513579"


def _submit(esme: Esme, ton: int, dst: str, text: bytes) -> Any:
    pdu = smpplib.smpp.make_pdu(
        "submit_sm",
        client=esme.client,
        source_addr_ton=smpplib.consts.SMPP_TON_INTL,
        source_addr_npi=1,
        source_addr=digits(SENDER),
        dest_addr_ton=ton,
        dest_addr_npi=1,
        destination_addr=dst,
        short_message=text,
        registered_delivery=1,
    )
    esme.client.send_pdu(pdu)
    esme.read_until(lambda: esme.resp_for(pdu) is not None)
    return esme.resp_for(pdu)


@pytest.mark.skipif(not node_available(), reason="node and tests/peers/node_modules are needed")
def test_sms_to_a_700_number_reaches_the_real_recipient(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "shop.yaml").write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "plan": CN_PLAN,
                "ax": [{"id": "cn-700-sms", "x": "700-1234-5678-9012", "a": "188 5551 3579"}],
            }
        )
    )
    with Store(tmp_path / "translate") as store:
        assert reload_maps(store, maps, CN).ok
    smsc = NodeSmsc(tmp_path / "upstream.jsonl")
    config = write_config(tmp_path / "smpp.yaml", tmp_path, upstream_port=smsc.port)
    data = yaml.safe_load(config.read_text())
    data["numbers"] = CN_PLAN
    config.write_text(yaml.safe_dump(data))
    relay = Proc(
        [sys.executable, "-m", "sms_smpp.cli", "smpp", "run", "--config", str(tmp_path)],
        "ansim smpp: listening",
        log=tmp_path / "relay.log",
    )
    port = int(relay.ready_line.rsplit(":", 1)[1])
    esme = Esme(port)
    try:
        sent = [
            (smpplib.consts.SMPP_TON_NATNL, X_NATIONAL, b"national"),
            (smpplib.consts.SMPP_TON_INTL, "86" + X_NATIONAL, b"international"),
            (smpplib.consts.SMPP_TON_UNK, "0086" + X_NATIONAL, b"unknown type"),
        ]
        ids = []
        for ton, dst, text in sent:
            resp = _submit(esme, ton, dst, text)
            assert resp.status == 0, (ton, dst, resp.status)
            ids.append(resp.message_id.decode())
        wait_for(lambda: len(smsc.accepted()) >= len(sent))
        upstream = {r["ansim_id"]: r for r in smsc.accepted()}
        for message_id, (_, _, text) in zip(ids, sent, strict=True):
            rec = upstream[message_id]
            assert bytes.fromhex(rec["short_message"]) == text
            assert (rec["destination_addr"], rec["dest_addr_ton"]) == (digits(RECIPIENT), 1)
            # X has no international form: national number, TON national.
            assert (rec["source_addr"], rec["source_addr_ton"]) == (X_NATIONAL, 2)
    finally:
        esme.close()
        assert relay.terminate() == 0
        smsc.terminate()
    deadline = time.monotonic() + 10
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline and len(rows) < len(sent):
        with sqlite3.connect(tmp_path / "cdr.sqlite") as db:
            rows = db.execute("SELECT destination, callee, presented FROM sms").fetchall()
        time.sleep(0.1)
    assert rows and all(r == (X, RECIPIENT, X) for r in rows), rows
