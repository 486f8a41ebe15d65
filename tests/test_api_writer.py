"""The API's store writer: units of work batched into one transaction, each undone alone
when it raises, whether the batch ran in savepoints or, for units that may be run twice,
straight in the transaction and again in savepoints after a failure."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from api.writer import StoreWriter
from translate.store import Store, Transaction

META = "test-writer"


TABLES: dict[str, Any] = {}


def put(key: str, runs: Counter[str], fail: bool = False) -> Callable[[Transaction], str]:
    def work(t: Transaction) -> str:
        runs[key] += 1
        t.txn.put(key.encode(), b"1", db=TABLES[t.store.path])
        if fail:
            raise ValueError(f"{key} refused")
        return key

    return work


def batch(writer: StoreWriter, units: list[tuple[Callable[[Transaction], Any], bool]]) -> list[Any]:
    """Run ``units`` as one batch: all queued before the writer takes the first."""

    async def main() -> list[Any]:
        tasks = [asyncio.ensure_future(writer.run(w, rerun=r)) for w, r in units]
        await asyncio.sleep(0)  # every unit queued
        writer.start()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        return asyncio.run(main())
    finally:
        writer.stop()


def keys(store: Store) -> set[str]:
    with store.reader() as txn:
        return {bytes(k).decode() for k, _ in txn.cursor(db=TABLES[store.path])}


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[StoreWriter]:
    with Store(tmp_path / "s.lmdb", map_size=64 << 20) as store:
        TABLES[store.path] = store.table(META)  # opened before other threads use it
        yield StoreWriter(store)


@pytest.mark.parametrize("rerun", [True, False])
def test_a_failing_unit_is_undone_alone(writer: StoreWriter, rerun: bool) -> None:
    runs: Counter[str] = Counter()
    out = batch(
        writer,
        [(put("a", runs), rerun), (put("b", runs, fail=True), rerun), (put("c", runs), rerun)],
    )
    assert out[0] == "a" and out[2] == "c" and isinstance(out[1], ValueError)
    assert keys(writer.store) == {"a", "c"}
    # Units that may be rerun ran straight in the transaction first (up to the one that
    # failed), then each again in a savepoint; the others ran once, in savepoints.
    if rerun:
        assert runs == Counter({"a": 2, "b": 2, "c": 1})
    else:
        assert runs == Counter({"a": 1, "b": 1, "c": 1})
    samples = {x.name: x.value for x in writer.batch_size.collect()[0].samples}
    count, total = (samples[f"ansim_api_write_batch_size_{k}"] for k in ("count", "sum"))
    assert (count, total) == (1, 3)


def test_after_a_failure_the_next_batch_goes_unit_by_unit(writer: StoreWriter) -> None:
    runs: Counter[str] = Counter()
    batch(writer, [(put("a", runs), True), (put("b", runs, fail=True), True)])
    assert runs == Counter({"a": 2, "b": 2})
    # Straight after a failure: savepoints at once (each unit runs once, failing or not).
    runs.clear()
    out = batch(writer, [(put("c", runs), True), (put("d", runs, fail=True), True)])
    assert out[0] == "c" and runs == Counter({"c": 1, "d": 1})
    # A clean batch (in savepoints) lets the one after it run straight again.
    assert batch(writer, [(put("e", runs), True)]) == ["e"]
    runs.clear()
    assert batch(writer, [(put("f", runs), True)]) == ["f"]
    batch(writer, [(put("g", runs), True), (put("h", runs, fail=True), True)])
    assert runs == Counter({"f": 1, "g": 2, "h": 2})
    assert keys(writer.store) == {"a", "c", "e", "f", "g"}


def test_a_batch_with_one_unit_not_to_be_rerun_goes_unit_by_unit(writer: StoreWriter) -> None:
    runs: Counter[str] = Counter()
    out = batch(
        writer,
        [(put("a", runs), True), (put("b", runs, fail=True), False), (put("c", runs), True)],
    )
    assert isinstance(out[1], ValueError) and runs == Counter({"a": 1, "b": 1, "c": 1})
    assert keys(writer.store) == {"a", "c"}
