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
from .registration import RegState

if TYPE_CHECKING:
    from .calls import CallEngine
    from .endpoint import SipEndpoint

_BUCKET_NAMES = [floatToGoString(b) for b in SETUP_BUCKETS] + ["+Inf"]


class SipCollector(Collector):
    """Reads the endpoint and call engine counters."""

    def __init__(self, endpoint: SipEndpoint, calls: CallEngine) -> None:
        self.endpoint = endpoint
        self.calls = calls

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
        yield from self._auth()
        yield from self._limits()

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
        for trunk, current, seconds, failed in engine.registrations.snapshot(
            self.endpoint.now()
        ):
            for each in RegState:
                state.add_metric([trunk, each.value], 1.0 if each is current else 0.0)
            left.add_metric([trunk], seconds or 0.0)
            failures.add_metric([trunk], failed)
        yield state
        yield left
        yield failures


def serve_metrics(endpoint: SipEndpoint, calls: CallEngine, listen: str) -> None:
    """Register the collector and serve /metrics on ``host:port`` from a thread."""
    REGISTRY.register(SipCollector(endpoint, calls))
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")
