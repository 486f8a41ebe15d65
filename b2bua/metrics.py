"""Prometheus metrics of the SIP side, collected at scrape time.

The hot path only bumps plain numbers on the endpoint's and call engine's stats
objects (the setup time histogram included: a bucket count per call); this collector
turns them into metric families when /metrics is read, so a call costs no
prometheus-client work at all.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .calls import SETUP_BUCKETS
from .flood import BANNED, PROBE, REASONS
from .registration import RegState

if TYPE_CHECKING:
    from .calls import CallEngine
    from .endpoint import SipEndpoint
    from .tls import TlsContexts

_BUCKET_NAMES = [floatToGoString(b) for b in SETUP_BUCKETS] + ["+Inf"]


class SipCollector(Collector):
    """Reads the endpoint and call engine counters."""

    def __init__(
        self, endpoint: SipEndpoint, calls: CallEngine, tls: TlsContexts | None = None
    ) -> None:
        self.endpoint = endpoint
        self.calls = calls
        self.tls = tls

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        ep = self.endpoint.stats
        c = self.calls.stats
        cumulative = 0
        buckets = []
        for name, n in zip(_BUCKET_NAMES, c.setup_buckets, strict=True):
            cumulative += n
            buckets.append((name, cumulative))
        yield HistogramMetricFamily(
            "ansim_call_setup_seconds",
            "INVITE received to 200 OK relayed to the caller",
            buckets=buckets,
            sum_value=c.setup_sum,
        )
        calls = CounterMetricFamily("ansim_calls", "Calls ended, by outcome", labels=["outcome"])
        for outcome, n in sorted(c.calls.items()):
            calls.add_metric([outcome], n)
        yield calls
        lookups = CounterMetricFamily(
            "ansim_lookups", "Translation lookups, by result", labels=["result"]
        )
        for result, n in sorted(c.lookups.items()):
            lookups.add_metric([result], n)
        yield lookups
        dtmf = CounterMetricFamily(
            "ansim_dtmf_digits",
            "Digits keyed by a party and handed to the call's controller, by how they came "
            "(rtp: RFC 4733 events seen by the media relay; info: SIP INFO)",
            labels=["via"],
        )
        for via, n in sorted(c.dtmf.items()):
            dtmf.add_metric([via], n)
        yield dtmf
        active = GaugeMetricFamily("ansim_active_calls", "Calls in progress")
        active.add_metric([], len(self.calls.calls))
        yield active
        frozen = GaugeMetricFamily(
            "ansim_gc_frozen_objects",
            "Objects kept out of cyclic garbage collection (steady under steady load; "
            "growth means garbage cycles)",
        )
        frozen.add_metric([], gc.get_freeze_count())
        yield frozen
        yield CounterMetricFamily("ansim_sip_requests", "SIP requests received", value=ep.requests)
        yield CounterMetricFamily(
            "ansim_sip_responses", "SIP responses received", value=ep.responses
        )
        yield CounterMetricFamily(
            "ansim_sip_parse_errors", "Messages that failed to parse", value=ep.parse_errors
        )
        yield CounterMetricFamily(
            "ansim_sip_responses_dropped",
            "Responses dropped by validation",
            value=ep.responses_dropped,
        )
        rejected = CounterMetricFamily(
            "ansim_sip_rejected", "Requests refused statelessly", labels=["status"]
        )
        for status, n in sorted(ep.rejected.items()):
            rejected.add_metric([str(status)], n)
        yield rejected
        yield CounterMetricFamily(
            "ansim_sip_retransmissions",
            "Retransmissions sent",
            value=self.endpoint.layer.retransmissions,
        )
        yield CounterMetricFamily(
            "ansim_sip_options_answered",
            "Out-of-dialog OPTIONS answered",
            value=ep.options_answered,
        )
        yield from self._edge()
        yield from self._auth()
        yield from self._limits()

    def _edge(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Flood protection, overload control, connections and TLS."""
        ep = self.endpoint
        tr = ep.transports
        flood = ep.flood
        if flood is not None:
            dropped = CounterMetricFamily(
                "ansim_flood_dropped",
                "Datagrams and stream messages dropped by flood protection, by reason",
                labels=["reason"],
            )
            for code, name in sorted(REASONS.items()):
                dropped.add_metric([name], flood.dropped.get(code, 0))
            yield dropped
            bans = CounterMetricFamily(
                "ansim_flood_bans", "Sources banned, by reason", labels=["reason"]
            )
            for code, name in sorted(REASONS.items()):
                if code != BANNED and code != PROBE:
                    bans.add_metric([name], flood.bans.get(code, 0))
            yield bans
            banned = GaugeMetricFamily("ansim_flood_banned_sources", "Sources banned now")
            banned.add_metric([], len(flood.banned))
            yield banned
        ov = ep.overload
        if ov is not None:
            yield CounterMetricFamily(
                "ansim_overload_rejected",
                "New INVITEs refused with 503 while shedding load",
                value=ep.stats.overload_rejected,
            )
            share = GaugeMetricFamily(
                "ansim_overload_admit_share", "Share of new INVITEs admitted now (1: all)"
            )
            share.add_metric([], ov.admit_share)
            yield share
            delay = GaugeMetricFamily(
                "ansim_overload_queue_delay_seconds",
                "Smallest wait of a datagram in the receive queue over the last interval",
            )
            delay.add_metric([], ov.delay)
            yield delay
        yield CounterMetricFamily(
            "ansim_sip_stateless_acks",
            "ACKs of stateless final responses, dropped",
            value=ep.stats.stateless_acks,
        )
        yield CounterMetricFamily("ansim_udp_datagrams", "UDP datagrams read", value=tr.datagrams)
        yield CounterMetricFamily(
            "ansim_udp_read_turns",
            "Turns of reading a UDP socket (up to 64 datagrams each)",
            value=tr.turns,
        )
        yield CounterMetricFamily(
            "ansim_udp_full_read_turns",
            "Turns that read 64 datagrams (more were waiting)",
            value=tr.full_turns,
        )
        drops = CounterMetricFamily(
            "ansim_udp_kernel_drops",
            "Datagrams the kernel dropped on a full receive queue (SO_RXQ_OVFL)",
        )
        drops.add_metric([], sum(getattr(u, "kernel_drops", 0) for u in tr.udp))
        yield drops
        yield CounterMetricFamily(
            "ansim_udp_errors", "UDP socket errors", value=tr.udp_errors + tr.udp_send_dropped
        )
        conns = GaugeMetricFamily(
            "ansim_sip_connections", "Open stream connections", labels=["transport"]
        )
        for kind in ("tcp", "tls"):
            conns.add_metric([kind], tr.connection_count(kind))
        yield conns
        refused = CounterMetricFamily(
            "ansim_sip_connections_refused",
            "Inbound connections refused, by reason",
            labels=["reason"],
        )
        for reason in ("banned", "total", "per_source"):
            refused.add_metric([reason], tr.refused.get(reason, 0))
        yield refused
        closed = CounterMetricFamily(
            "ansim_sip_connections_timed_out",
            "Connections closed by a timeout: idle, slow (a message not complete in time), "
            "silent (no first message in time)",
            labels=["reason"],
        )
        for reason in ("idle", "slow", "silent"):
            closed.add_metric([reason], tr.closed_by_timeout.get(reason, 0))
        yield closed
        handshakes = CounterMetricFamily(
            "ansim_tls_handshakes", "TLS handshakes completed", labels=["side"]
        )
        handshakes.add_metric(["server"], tr.tls_handshakes)
        handshakes.add_metric(["client"], tr.tls_client_handshakes)
        yield handshakes
        failures = CounterMetricFamily(
            "ansim_tls_handshake_failures",
            "TLS handshakes that failed or timed out, and client certificates refused",
            labels=["error"],
        )
        for error, n in sorted(tr.handshake_errors.items()):
            failures.add_metric([error], n)
        yield failures
        tls = self.tls
        if tls is not None:
            yield CounterMetricFamily(
                "ansim_tls_reloads", "TLS certificate reloads", value=tls.reloads
            )
            yield CounterMetricFamily(
                "ansim_tls_reload_failures",
                "TLS certificate reloads refused (the running one stays)",
                value=tls.reload_failures,
            )

    def _limits(self) -> Iterator[CounterMetricFamily]:
        """Refusals of translate.limits (calls and, through the SMS relay in this
        process, SMS), the marketing rule's alerts, and failures of its store."""
        limits = self.calls.limits
        refused = CounterMetricFamily(
            "ansim_limits_refused",
            "Calls and SMS refused by caps, blocklists or the marketing rule, by reason",
            labels=["reason", "medium"],
        )
        alerts = CounterMetricFamily(
            "ansim_abuse_alerts",
            "Alerts raised: parties blocked by the marketing-pattern rule",
            labels=["rule"],
        )
        errors = CounterMetricFamily(
            "ansim_limits_store_errors",
            "Attempts admitted uncounted because the limits store failed",
        )
        if limits is not None:
            for (reason, medium), n in sorted(limits.refused.items()):
                refused.add_metric([reason, medium], n)
            alerts.add_metric(["marketing"], limits.alerts)
            errors.add_metric([], limits.errors)
        yield refused
        yield alerts
        yield errors

    def _auth(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Digest challenges ansim made and answered, and its registrations."""
        engine = self.calls
        inbound = CounterMetricFamily(
            "ansim_auth_inbound",
            "New INVITEs of trunks with auth, by result (challenged: a challenge was sent; "
            "ok; stale, unknown_nonce: challenged again; auth_failed, auth_replay, "
            "auth_malformed: refused with 403)",
            labels=["result"],
        )
        if engine.auth is not None:
            for result, n in sorted(engine.auth.stats.items()):
                inbound.add_metric([result], n)
        yield inbound
        outbound = CounterMetricFamily(
            "ansim_auth_outbound",
            "Challenges of ansim's requests by a trunk, by method and result (answered; "
            "failed: no credentials, none usable, or refused)",
            labels=["method", "result"],
        )
        for (method, result), n in sorted(engine.stats.challenges.items()):
            outbound.add_metric([method, result], n)
        yield outbound
        if engine.registrations is None:
            return
        state = GaugeMetricFamily(
            "ansim_registration_state",
            "State of ansim's registration at a trunk's registrar (1 for the current state)",
            labels=["trunk", "state"],
        )
        left = GaugeMetricFamily(
            "ansim_registration_expires_seconds",
            "Seconds until the registrar's binding of ansim expires (0: none in force)",
            labels=["trunk"],
        )
        failures = GaugeMetricFamily(
            "ansim_registration_failures",
            "Consecutive failed registration attempts",
            labels=["trunk"],
        )
        for trunk, current, seconds, failed in engine.registrations.snapshot(self.endpoint.now()):
            for each in RegState:
                state.add_metric([trunk, each.value], 1.0 if each is current else 0.0)
            left.add_metric([trunk], seconds or 0.0)
            failures.add_metric([trunk], failed)
        yield state
        yield left
        yield failures


def serve_metrics(
    endpoint: SipEndpoint, calls: CallEngine, listen: str, tls: TlsContexts | None = None
) -> None:
    """Register the collector and serve /metrics on ``host:port`` from a thread."""
    REGISTRY.register(SipCollector(endpoint, calls, tls))
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")
