"""The collaborators an API app is built with (``api.app.create_app(context)``).

Everything the request handlers use comes from here, so a test builds an app on a real
store in a temporary folder, and the process entry point builds it on the configured
one. What the engine writes for the API (call and SMS records, the webhook outboxes
beside them) is reached through files named here (``cdr``, ``sms``), read with the
layouts this package knows of them (``api.records``): ``api`` never imports the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from api.control import ControlTables
from api.metrics import ApiMetrics
from api.settings import ApiSettings
from api.webhooks import WebhookTables
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
    #: The call records file (the engine's ``cdr``) and the SMS records file; None: none.
    cdr: str | None = None
    sms: str | None = None
    #: The webhook tables (opened with the context: LMDB opens a table in a transaction
    #: of its own, which must not happen inside the writer's).
    hooks: WebhookTables | None = None

    @property
    def webhooks(self) -> WebhookTables:
        if self.hooks is None:
            self.hooks = WebhookTables(self.store)
        return self.hooks

    @classmethod
    def open(
        cls,
        store: Store,
        settings: ApiSettings | None = None,
        plan: NumberPlan | None = None,
        *,
        clock: Callable[[], float] = time.time,
        cdr: str | None = None,
        sms: str | None = None,
    ) -> ApiContext:
        """A context on ``store`` with its control tables, a writer and fresh metrics."""
        settings = settings or ApiSettings()
        metrics = ApiMetrics()
        writer = StoreWriter(
            store,
            max_batch=settings.max_batch,
            min_interval=settings.commit_interval,
            clock=clock,
            registry=metrics.registry,
        )
        control = ControlTables(store)
        return cls(
            store, control, writer, metrics, settings, plan or NumberPlan(), clock, cdr, sms,
            WebhookTables(store),
        )  # fmt: skip
