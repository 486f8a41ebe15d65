"""Tests for translate.reload: reloading maps into the store, watching for changes, and
two processes (one reloading, one looking up) never seeing a missing or mixed map."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from translate_helpers import NOW, axb, write_map

from translate.bindings import Route
from translate.reload import MapWatcher, reload_maps
from translate.store import Store

MAP_V1 = """
axb:
  - {id: t1, x: 050-7000-2001, a: 010-1111-0001, b: 010-1111-0002}
ax:
  - {x: 050-7000-1001, a: 010-1111-0003}
"""


def test_reload_then_replace(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    write_map(maps, "a.yaml", MAP_V1)
    with Store(tmp_path / "s.lmdb", map_size=32 << 20) as store:
        first = reload_maps(store, maps, now=NOW)
        assert first.ok and (first.files, first.bindings, first.added) == (1, 2, 2)
        assert isinstance(store.lookup("+825070002001", "+821011110001", NOW), Route)
        write_map(maps, "a.yaml", MAP_V1.replace("010-1111-0003", "010-1111-0009"))
        second = reload_maps(store, maps, now=NOW)
        assert (second.added, second.changed, second.removed, second.unchanged) == (0, 1, 0, 1)
        assert "1 changed" in second.summary()
        route = store.lookup("+825070001001", "+821099999999", NOW)
        assert isinstance(route, Route) and route.callee == "+821011110009"
        (maps / "a.yaml").unlink()
        third = reload_maps(store, maps, now=NOW)
        assert third.ok and third.removed == 2
        assert store.stats(NOW).total == 0


def test_bad_map_is_refused_and_logged_and_old_map_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    maps = tmp_path / "maps"
    path = write_map(maps, "a.yaml", MAP_V1)
    with Store(tmp_path / "s.lmdb", map_size=32 << 20) as store:
        assert reload_maps(store, maps, now=NOW).ok
        write_map(maps, "a.yaml", MAP_V1 + "  - {x: 050-7000-1002, a: 12}\n")
        with caplog.at_level(logging.ERROR, logger="translate.reload"):
            result = reload_maps(store, maps, now=NOW)
        assert not result.ok
        assert [str(e) for e in result.errors] == [
            f"{path}:5:27: bad-number: ax[1].a: not a telephone number:"
            " too short (4 digits, at least 7)"
        ]
        assert "map refused: 1 error(s); the running map stays" in caplog.text
        assert f"{path}:5:27: bad-number" in caplog.text
        assert sorted(store.ids("yaml")) == ["ax:+825070001001", "t1"]


def test_conflict_with_api_binding_reported_at_the_map_line(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    path = write_map(maps, "a.yaml", MAP_V1)
    with Store(tmp_path / "s.lmdb", map_size=32 << 20) as store:
        store.put(
            axb("api-1", x="+825070002001", a="+821011110002", b="+821022220002"),
            now=NOW,
            source="api",
        )
        result = reload_maps(store, maps, now=NOW)
        assert not result.ok
        assert [str(e) for e in result.errors] == [
            f"{path}:2:5: party-conflict: +8210****0002 already has a route on"
            " +825070002001 in axb 'api-1'"
        ]
        assert store.ids("yaml") == []
        assert store.ids("api") == ["api-1"]


def test_missing_maps_dir_changes_nothing(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    write_map(maps, "a.yaml", MAP_V1)
    with Store(tmp_path / "s.lmdb", map_size=32 << 20) as store:
        assert reload_maps(store, maps, now=NOW).ok
        result = reload_maps(store, tmp_path / "typo", now=NOW)
        assert not result.ok
        assert "no such file or directory" in str(result.errors[0])
        assert len(store.ids("yaml")) == 2


def test_map_watcher(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    path = write_map(maps, "a.yaml", MAP_V1)
    watcher = MapWatcher(maps)
    assert watcher.changed() is False
    path.write_text(MAP_V1 + "# edited\n")
    assert watcher.changed() is True
    assert watcher.changed() is False
    os.utime(path, ns=(1, 1))
    assert watcher.changed() is True
    write_map(maps, "notes.txt", "not a map")
    assert watcher.changed() is False
    extra = write_map(maps, "b.yml", "ax: []\n")
    assert watcher.changed() is True
    extra.unlink()
    assert watcher.changed() is True
    assert watcher.changed() is False
    assert MapWatcher(tmp_path / "missing").changed() is False


# ------------------------------------------------------- two-process consistency

PAIRS = 400  # X numbers, each holding two axb pairs; plus as many ax bindings


def generation_map(gen: int) -> str:
    """Map generation ``gen``: the same numbers, paired differently on odd and even
    generations, every binding id tagged with the generation."""
    lines = ["axb:"]
    for i in range(PAIRS):
        x = f"+8250700{i:05d}"
        p = [f"+8210{i:04d}{k:04d}" for k in range(4)]
        pairs = [(p[0], p[1]), (p[2], p[3])] if gen % 2 else [(p[0], p[2]), (p[1], p[3])]
        for j, (a, b) in enumerate(pairs):
            lines.append(f"  - {{id: p{i}-{j}-g{gen}, x: '{x}', a: '{a}', b: '{b}'}}")
    lines.append("ax:")
    for i in range(PAIRS):
        lines.append(f"  - {{id: h{i}-g{gen}, x: '+8250710{i:05d}', a: '+8220{gen % 2}{i:06d}'}}")
    return "\n".join(lines) + "\n"


READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from translate.bindings import Route
    from translate.store import Store

    store_path, stop, pairs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])

    def expected(i, k, gen):
        p = [f"+8210{i:04d}{n:04d}" for n in range(4)]
        other = {0: 1, 1: 0, 2: 3, 3: 2} if gen % 2 else {0: 2, 2: 0, 1: 3, 3: 1}
        return p[k], p[other[k]]

    store = Store(store_path, readonly=True)
    last_gen, lookups, gens, problems = 0, 0, set(), []
    n = 0
    while not stop.exists() and len(problems) < 5:
        n += 1
        i = (n * 7919) % pairs
        if n % 5 == 0:
            x, caller = f"+8250710{i:05d}", "+821099999999"
        else:
            k = n % 4
            caller, _ = expected(i, k, 1)
            x = f"+8250700{i:05d}"
        result = store.lookup(x, caller, time.time(), count=False)
        lookups += 1
        if not isinstance(result, Route):
            problems.append(f"missing: {x} from {caller}: {result}")
            continue
        gen = int(result.binding_id.rsplit("-g", 1)[1])
        gens.add(gen)
        if gen < last_gen:
            problems.append(f"mixed: generation {gen} after {last_gen} ({x})")
        last_gen = max(last_gen, gen)
        if n % 5 == 0:
            want = f"+8220{gen % 2}{i:06d}"
        else:
            want = expected(i, k, gen)[1]
        if result.callee != want:
            problems.append(f"mixed: {x} from {caller} -> {result.callee}, gen {gen} wants {want}")
    print(json.dumps({"lookups": lookups, "generations": sorted(gens), "problems": problems}))
    """
)


def test_reload_while_another_process_looks_up(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    write_map(maps, "pairs.yaml", generation_map(1))
    store_path = tmp_path / "s.lmdb"
    stop = tmp_path / "stop"
    with Store(store_path, map_size=64 << 20) as store:
        assert reload_maps(store, maps).ok
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(store_path), str(stop), str(PAIRS)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        try:
            for gen in range(2, 14):
                staged = maps / "pairs.yaml.tmp"
                staged.write_text(generation_map(gen))
                staged.replace(maps / "pairs.yaml")
                result = reload_maps(store, maps)
                assert result.ok, result.errors[:3]
                assert (result.added, result.removed) == (3 * PAIRS, 3 * PAIRS)
        finally:
            stop.touch()
            out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0
    report = json.loads(out)
    assert report["problems"] == []
    assert report["lookups"] > 1000
    # the reader really ran during the reloads, not only before or after them
    assert len(report["generations"]) >= 3
