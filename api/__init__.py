"""The control plane: the REST API (FastAPI, OpenAPI 3.1), tenants and keys, audit log.

- ``app``: ``create_app(context)``, the application, built from an ``ApiContext``
  (``context``): the translation store, the control tables kept beside it (``control``),
  the store writer (``writer``), settings (``settings``) and metrics (``metrics``).
- ``routers``: one module per resource (bindings, pools, admin), models beside each.
- ``binding_ops``: bindings checked and written; ``idempotency``: Idempotency-Key.
- ``keys``: the key format and hashing, the scopes; ``deps``: the key check per route.
- ``errors``: the error codes and detail rules, one table each.
- ``cli``: ``ansim api``, ``ansim keys``, ``ansim tenants``.

This package imports translate/ and nothing else of ansim's; what it needs of the engine
is handed to it through ``ApiContext``.
"""
