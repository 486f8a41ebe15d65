"""The collaborators an API app is built with (``api.app.create_app(context)``).

Everything the request handlers use comes from here, so a test builds an app on a real
store in a temporary folder, and the process entry point builds it on the configured
one. The engine's own services (call records, event sources for webhooks) will be
handed in the same way, as interfaces this package defines: ``api`` never imports the
engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from api.control import ControlTables
from api.metrics import ApiMetrics
from api.settings import ApiSettings
from api.writer import StoreWriter
from translate.numbers import NumberPlan
from translate.store import Store

__all__ = ["ApiContext"]


@dataclass(slots=True)
class ApiContext:
    """The store and what is kept beside it, the writer, metrics, settings and clock."""

    store: Store
    control: ControlTables
    writer: StoreWriter
    metrics: ApiMetrics
    settings: ApiSettings
    plan: NumberPlan
    clock: Callable[[], float] = time.time

    @classmethod
    def open(
        cls,
        store: Store,
        settings: ApiSettings | None = None,
        plan: NumberPlan | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> ApiContext:
        """A context on ``store`` with its control tables, a writer and fresh metrics."""
        settings = settings or ApiSettings()
        metrics = ApiMetrics()
        writer = StoreWriter(
            store, max_batch=settings.max_batch, clock=clock, registry=metrics.registry
        )
        return cls(
            store, ControlTables(store), writer, metrics, settings, plan or NumberPlan(), clock
        )
