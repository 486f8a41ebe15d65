"""The kernel scheduling of the engine's event-loop thread (``scheduling`` in
``ansim.yaml``).

Every call's signalling goes through one thread. Where it shares the CPUs with other
work (the control API, media relays, a database, a monitoring agent), the latency of
each message depends on how soon the kernel runs that thread when a datagram arrives.
A real-time policy (``rr`` or ``fifo``) makes the kernel run it at once, ahead of every
normal process, as telephony servers commonly allow (a "real-time priority" option).
It is given to the loop's thread only, with ``SCHED_RESET_ON_FORK``: the threads and
processes the engine starts afterwards (record writers, store jobs, API processes,
relays) get the normal policy, so that none of their bulk work runs ahead of the rest
of the machine. Linux keeps 5 % of each CPU for normal processes
(``kernel.sched_rt_runtime_us``), so even a looping engine cannot lock the host.
Needs ``CAP_SYS_NICE`` (root, or ``AmbientCapabilities=CAP_SYS_NICE`` in a unit).
"""

from __future__ import annotations

import os
from typing import Final

#: ``scheduling.policy`` values and the Linux policies they name
POLICIES: Final = {
    "normal": getattr(os, "SCHED_OTHER", 0),
    "rr": getattr(os, "SCHED_RR", 2),
    "fifo": getattr(os, "SCHED_FIFO", 1),
}


def apply(policy: str, priority: int) -> str | None:
    """Give the calling thread ``policy`` at ``priority`` (real-time policies), new
    threads and children reset to normal; the reason it could not, or None."""
    if policy == "normal":
        return None
    if not hasattr(os, "sched_setscheduler") or not hasattr(os, "SCHED_RESET_ON_FORK"):
        return "this system has no real-time scheduling policies"
    try:
        os.sched_setscheduler(
            0, POLICIES[policy] | os.SCHED_RESET_ON_FORK, os.sched_param(priority)
        )
    except PermissionError:
        return "not permitted (it needs CAP_SYS_NICE)"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
