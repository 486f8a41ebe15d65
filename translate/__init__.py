"""Number translation: normalisation, bindings, the LMDB store and operator YAML maps.

Modules, from the edge inwards:

- ``numbers``: ``normalise`` any written or signalled number to E.164 (with the lengths
  of each national range, ``NATIONAL_PLANS``), ``mask`` for logs.
- ``bindings``: the ``ax``/``axb``/``axn`` Binding and the lookup answers Route / Refusal.
- ``refusals``: how each refusal is answered, by SIP and by SMPP: the one table for all.
- ``store``: the LMDB translation table (``Store.lookup`` is the per-call hot path), and
  ``Transaction``, one write shared by many units of work (the API's group commit).
- ``private_files``: files and folders readable by their owner only (real numbers).
- ``owners``: per-tenant indexes of the bindings made through the API.
- ``pools``, ``allocation``: virtual-number pools, their load, and choosing a number.
- ``mapfile``, ``compiler``: the operator map format and its validation.
- ``reload``: ``reload_maps``, the drop guard and ``MapWatcher`` for the engine.
- ``settings``: the ``numbers`` configuration section and paths relative to the
  configuration folder; ``cli``: ``ansim numbers``.
- ``yaml_source``: YAML loading with file:line:column errors, for all of ansim's config.

This package imports nothing else of ansim's.
"""
