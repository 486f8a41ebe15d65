"""Prometheus metrics of the SMPP relay (served by the engine's /metrics endpoint).

Children with fixed labels are resolved once here so that the hot path only calls
``inc()``/``observe()``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PDUS_IN = Counter("ansim_smpp_pdus_received_total", "SMPP PDUs received", ["side"])
SUBMITS = Counter("ansim_smpp_submits_total", "submit_sm from carriers, by outcome", ["result"])
UPSTREAM_SUBMITS = Counter(
    "ansim_smpp_upstream_submits_total", "submit_sm sent upstream, by outcome", ["result"]
)
RECEIPTS = Counter("ansim_smpp_receipts_total", "delivery receipts from upstream", ["result"])
MO = Counter("ansim_smpp_mo_total", "mobile-originated SMS from upstream", ["result"])
ESME_DELIVERIES = Counter(
    "ansim_smpp_esme_deliveries_total", "deliver_sm to carriers, by outcome", ["result"]
)
PROTOCOL_ERRORS = Counter("ansim_smpp_protocol_errors_total", "invalid PDUs received", ["side"])
RECEIPTS_HELD = Gauge(
    "ansim_smpp_receipts_held", "receipts waiting for the submit_sm_resp that maps their id"
)
BINDS = Gauge("ansim_smpp_binds", "live binds", ["side"])
BIND_ATTEMPTS = Counter("ansim_smpp_bind_attempts_total", "bind attempts", ["result"])
LOG_SUPPRESSED = Counter(
    "ansim_smpp_log_lines_suppressed_total",
    "log lines held back by a rate limit (a flood of one kind of event)",
    ["kind"],
)
SUBMITS_WAITING = Gauge(
    "ansim_smpp_submits_waiting", "carriers' submit_sm waiting unanswered while paced"
)
QUEUE_DEPTH = Gauge("ansim_smpp_queue_depth", "messages stored and not yet delivered")
RELAY_LATENCY = Histogram(
    "ansim_smpp_relay_seconds",
    "from a carrier's submit_sm to the upstream's submit_sm_resp",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)

SPLIT = Counter(
    "ansim_smpp_split_total",
    "messages split into concatenated parts for an upstream's max_pdu_size",
)
SUBMIT_ACCEPTED = SUBMITS.labels("accepted")
SUBMIT_REFUSED = SUBMITS.labels("refused")
SUBMIT_THROTTLED = SUBMITS.labels("throttled")
SUBMIT_INVALID = SUBMITS.labels("invalid")
RECEIPT_MAPPED = RECEIPTS.labels("mapped")
RECEIPT_UNMATCHED = RECEIPTS.labels("unmatched")
UP_OK = UPSTREAM_SUBMITS.labels("ok")
UP_RETRY = UPSTREAM_SUBMITS.labels("retry")
UP_FAILED = UPSTREAM_SUBMITS.labels("failed")
UP_EXPIRED = UPSTREAM_SUBMITS.labels("expired")
UP_SET_ASIDE = UPSTREAM_SUBMITS.labels("set_aside")
PDUS_IN_ESME = PDUS_IN.labels("carrier")
PDUS_IN_UPSTREAM = PDUS_IN.labels("upstream")
