"""Number normalisation micro-benchmark: nanoseconds per ``translate.numbers.normalise``.

``normalise`` runs twice per call (the dialled virtual number and the caller) on the
engine's hot path. This times it for each written form a trunk or a map sends, in a
loop of ``--count`` calls per form, and prints the median of ``--runs`` runs per form
(nanoseconds per call, loop overhead included; an empty loop is timed and shown too).

    flock /tmp/ansim-heavy.lock .venv/bin/python bench/normalise_bench.py --count 200000
"""

from __future__ import annotations

import argparse
import statistics
import time

from translate.numbers import CN, KR, NumberPlan, normalise

#: (label, input, plan): the forms the engine sees most, then the rarer ones, then China's
#: national-only 700 range (17 digits after +86) under a Chinese trunk's plan.
FORMS: tuple[tuple[str, str, NumberPlan], ...] = (
    ("E.164 mobile", "+821047382916", KR),
    ("national mobile", "01047382916", KR),
    ("national 050x", "050770004001", KR),
    ("dashed mobile", "010-4738-2916", KR),
    ("Seoul landline", "0255501010", KR),
    ("international 00", "00821047382916", KR),
    ("foreign E.164", "+12125550100", KR),
    ("sip URI", "sip:01047382916@carrier.example;user=phone", KR),
    ("tel URI", "tel:+82-10-4738-2916", KR),
    ("cut short (bad)", "0104738291", KR),
    ("CN mobile", "13800000001", CN),
    ("CN 700 national", "700123456789012", CN),
    ("CN 700 +86", "+86700123456789012", CN),
    ("CN 700 context", "700123456789012;phone-context=+86", CN),
)


def per_call_ns(raw: str, plan: NumberPlan, count: int) -> float:
    f = normalise
    started = time.perf_counter_ns()
    for _ in range(count):
        f(raw, plan)
    return (time.perf_counter_ns() - started) / count


def empty_loop_ns(count: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(count):
        pass
    return (time.perf_counter_ns() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000, help="calls per run and form")
    parser.add_argument("--runs", type=int, default=5, help="runs per form (median shown)")
    args = parser.parse_args()
    print(f"normalise, {args.count:,} calls x {args.runs} runs per form, median ns a call")
    print(
        f"  {'(empty loop)':<18} {statistics.median(empty_loop_ns(args.count) for _ in range(args.runs)):7.0f}"
    )
    for label, raw, plan in FORMS:
        result = normalise(raw, plan)
        ns = statistics.median(per_call_ns(raw, plan, args.count) for _ in range(args.runs))
        print(f"  {label:<18} {ns:7.0f}  {raw!r} -> {str(result)!r}")


if __name__ == "__main__":
    main()
