"""Number translation: normalisation, bindings, the LMDB store and operator YAML maps.

Modules, from the edge inwards:

- ``numbers``: ``normalise`` any written or signalled number to E.164, ``mask`` for logs.
- ``bindings``: the ``ax``/``axb``/``axn`` Binding and the lookup answers Route / Refusal.
- ``store``: the LMDB translation table (``Store.lookup`` is the per-call hot path), and
  ``Transaction``, one write shared by many units of work (the API's group commit).
- ``owners``: per-tenant indexes of the bindings made through the API.
- ``pools``, ``allocation``: virtual-number pools, their load, and choosing a number.
- ``mapfile``, ``compiler``: the operator map format and its validation.
- ``reload``: ``reload_maps`` and ``MapWatcher`` for the engine; ``cli``: ``ansim numbers``.
- ``yaml_source``: YAML loading with file:line:column errors, for all of ansim's config.

This package imports nothing else of ansim's.
"""
