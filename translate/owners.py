"""Who owns a binding made through the API: per-tenant indexes of the bindings table.

Bindings with a ``tenant`` (see translate.bindings) are indexed in the ``owners`` named
database of the translation store, written in the same transaction as the binding by
``translate.store`` (so an index never names a binding that is not there):

``i tenant\\0id``            -> empty: the tenant's bindings in id order (listing, paging)
``p tenant\\0C\\0X\\0id``     -> msgpack expires: per real number C, the virtual numbers it
                             is bound on (reads by real number; the numbers a party
                             already holds when a pool allocates)
``o tenant\\0out_id\\0id``    -> empty: reads by the platform's own reference

Bindings from the operator's maps have no tenant and no entries here, so loading a map
costs nothing more.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import lmdb
import msgpack

from translate.bindings import Binding

__all__ = ["TABLE", "OwnerIndex"]

TABLE: Final = "owners"
_SEP: Final = b"\x00"
_pack = msgpack.packb
_unpack = msgpack.unpackb


def _id_key(tenant: str, binding_id: str) -> bytes:
    return b"i" + tenant.encode() + _SEP + binding_id.encode()


def _party_prefix(tenant: str, number: str) -> bytes:
    return b"p" + tenant.encode() + _SEP + number.encode() + _SEP


def _out_prefix(tenant: str, out_id: str) -> bytes:
    return b"o" + tenant.encode() + _SEP + out_id.encode() + _SEP


class OwnerIndex:
    """The ``owners`` table, read and written inside a caller's LMDB transaction."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def _keys(self, binding: Binding) -> list[tuple[bytes, bytes]]:
        tenant = binding.tenant
        assert tenant is not None
        bid = binding.id.encode()
        expires = _pack(binding.expires)
        out = [(_id_key(tenant, binding.id), b"")]
        for number in binding.numbers():
            key = _party_prefix(tenant, number) + binding.virtual.encode() + _SEP + bid
            out.append((key, expires))
        if binding.out_id is not None:
            out.append((_out_prefix(tenant, binding.out_id) + bid, b""))
        return out

    def added(self, txn: lmdb.Transaction, binding: Binding) -> None:
        for key, value in self._keys(binding):
            txn.put(key, value, db=self._db)

    def removed(self, txn: lmdb.Transaction, binding: Binding) -> None:
        for key, _ in self._keys(binding):
            txn.delete(key, db=self._db)

    def ids(self, txn: lmdb.Transaction, tenant: str, after: str = "", limit: int = 0) -> list[str]:
        """The tenant's binding ids in id order, after ``after``, at most ``limit`` (0: all)."""
        prefix = b"i" + tenant.encode() + _SEP
        start = prefix + after.encode() + (_SEP if after else b"")
        return [bytes(k[len(prefix) :]).decode() for k in self._walk(txn, prefix, start, limit)]

    def by_number(
        self, txn: lmdb.Transaction, tenant: str, number: str
    ) -> Iterator[tuple[str, str, float | None]]:
        """(X, binding id, expires) of the tenant's bindings that have ``number`` as A or B."""
        prefix = _party_prefix(tenant, number)
        cursor = txn.cursor(db=self._db)
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not bytes(key).startswith(prefix):
                return
            virtual, _, binding_id = bytes(key[len(prefix) :]).decode().partition("\0")
            yield virtual, binding_id, _unpack(value)

    def by_out_id(self, txn: lmdb.Transaction, tenant: str, out_id: str) -> list[str]:
        prefix = _out_prefix(tenant, out_id)
        return [bytes(k[len(prefix) :]).decode() for k in self._walk(txn, prefix, prefix, 0)]

    def _walk(self, txn: lmdb.Transaction, prefix: bytes, start: bytes, limit: int) -> list[bytes]:
        cursor = txn.cursor(db=self._db)
        out: list[bytes] = []
        if cursor.set_range(start):
            for key in cursor.iternext(keys=True, values=False):
                if not bytes(key).startswith(prefix):
                    break
                out.append(bytes(key))
                if len(out) == limit:
                    break
        return out
