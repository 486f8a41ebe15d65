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
from translate.reload import DropGuard, MapWatcher, open_writers, reload_maps
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
    watcher = MapWatcher(maps, settle=0, now=0)
    assert watcher.poll(1) is False
    path.write_text(MAP_V1 + "# edited\n")
    assert watcher.poll(2) is True
    assert watcher.poll(3) is False
    os.utime(path, ns=(1, 1))
    assert watcher.poll(4) is True
    write_map(maps, "notes.txt", "not a map")
    assert watcher.poll(5) is False
    extra = write_map(maps, "b.yml", "ax: []\n")
    assert watcher.poll(6) is True
    extra.unlink()
    assert watcher.poll(7) is True
    assert watcher.poll(8) is False
    assert MapWatcher(tmp_path / "missing", settle=0).poll(9) is False


def test_the_watcher_waits_until_the_folder_settles(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    path = write_map(maps, "a.yaml", MAP_V1)
    watcher = MapWatcher(maps, settle=2.0, now=0)
    with open(path, "a") as out:  # a slow copy: a chunk, a pause, a chunk ...
        for t in (10, 11, 12, 13):
            out.write("# chunk\n")
            out.flush()
            assert watcher.poll(t) is False
    assert watcher.poll(14) is False  # quiet for 1 s only
    assert watcher.poll(15) is True  # quiet for 2 s, and nobody writes it
    assert watcher.poll(30) is False


@pytest.mark.parametrize(
    "name",
    [
        ".a.yaml",  # dotfile
        ".a.yaml.Xq3z9",  # rsync
        ".#a.yaml",  # emacs lock
        "#a.yaml#",  # emacs autosave
        "~a.yaml",
        "a.yaml~",  # backup
        "a.yaml.tmp",
        "a.yaml.part",
        ".a.yaml.swp",  # vim
        "a.yaml.swx",
        "4913",  # vim's probe file
    ],
)
def test_temporary_names_are_never_maps(tmp_path: Path, name: str) -> None:
    maps = tmp_path / "maps"
    write_map(maps, "a.yaml", MAP_V1)
    watcher = MapWatcher(maps, settle=0, now=0)
    half = MAP_V1[:40]  # a half-written file under a name the watcher ignores
    (maps / name).write_text(half)
    assert watcher.poll(1) is False
    with Store(tmp_path / "s.lmdb", map_size=32 << 20) as store:
        result = reload_maps(store, maps, now=NOW)  # not loaded by a reload either
        assert result.ok and result.files == 1 and result.bindings == 2
    os.replace(maps / name, maps / "b.yaml")  # renamed into place: now it is one
    assert watcher.poll(2) is True


def test_the_watcher_waits_for_a_writer_to_close_the_file(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    path = write_map(maps, "a.yaml", MAP_V1)
    watcher = MapWatcher(maps, settle=0, writer_wait=60, now=0)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; f = open(sys.argv[1], 'a'); f.write('# more\\n'); f.flush();"
            " print('open', flush=True); sys.stdin.readline()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"open\n"
        assert open_writers([path]) == [(writer.pid, str(path))]
        assert watcher.poll(10) is False  # settled, but still open for writing
        assert watcher.poll(50) is False
        assert writer.stdin is not None
        writer.stdin.close()
        assert writer.wait(10) == 0
        assert open_writers([path]) == []
        assert watcher.poll(51) is True
    finally:
        writer.kill()
        writer.wait(10)


def test_the_writer_wait_is_bounded(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    path = write_map(maps, "a.yaml", MAP_V1)
    watcher = MapWatcher(maps, settle=0, writer_wait=30, now=0)
    with open(path, "a") as out:
        out.write("# open for good\n")
        out.flush()
        # This process's own descriptors do not count: a child holds the file instead.
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(30)"], pass_fds=(out.fileno(),)
        )
        try:
            assert open_writers([path]) == [(child.pid, str(path))]
            assert watcher.poll(10) is False
            assert watcher.poll(39) is False
            assert watcher.poll(41) is True  # 31 s after the change: tried as it is
        finally:
            child.kill()
            child.wait(10)


def test_open_writers_sees_read_write_but_not_read_only(tmp_path: Path) -> None:
    path = write_map(tmp_path, "a.yaml", MAP_V1)
    code = (
        "import sys, time; f = open(sys.argv[1], sys.argv[2]); print(1, flush=True); time.sleep(30)"
    )
    for mode, writes in (("r", False), ("r+", True), ("w", True)):
        child = subprocess.Popen(
            [sys.executable, "-c", code, str(path), mode], stdout=subprocess.PIPE
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == b"1\n"
            assert open_writers([path]) == ([(child.pid, str(path))] if writes else []), mode
        finally:
            child.kill()
            child.wait(10)
        path.write_text(MAP_V1)


def _map_of(n: int, callee: str = "010-2222") -> str:
    return "ax:\n" + "".join(
        f"  - {{id: b{i}, x: 0507-1000-{i:04d}, a: {callee}-{i:04d}}}\n" for i in range(n)
    )


def test_the_drop_guard_refuses_a_map_cut_short_until_forced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    maps = tmp_path / "maps"
    write_map(maps, "a.yaml", _map_of(200))
    guard = DropGuard(0.10, 10)
    with Store(tmp_path / "s.lmdb", map_size=32 << 20) as store:
        assert reload_maps(store, maps, now=NOW, guard=guard).ok
        digest = store.loaded("yaml")
        # At an entry boundary: valid YAML, 120 bindings fewer.
        write_map(maps, "a.yaml", _map_of(80))
        with caplog.at_level(logging.ERROR, logger="translate.reload"):
            refused = reload_maps(store, maps, now=NOW, guard=guard)
        assert not refused.ok and refused.errors == []
        assert refused.refusal == (
            "it would remove 120 of the 200 live YAML bindings (60%), more than a reload may"
            " without being forced (max_drop 10%, drop_allowance 10)"
        )
        assert "SIGUSR1" in refused.summary() and "--force" in refused.summary()
        assert refused.summary() in caplog.text
        assert len(store.ids("yaml")) == 200 and store.loaded("yaml") == digest
        # Within the share, or the allowance, a reload goes through.
        write_map(maps, "a.yaml", _map_of(181))
        assert reload_maps(store, maps, now=NOW, guard=guard).removed == 19
        write_map(maps, "a.yaml", _map_of(171))
        assert reload_maps(store, maps, now=NOW, guard=guard).removed == 10
        # Forced (no guard): anything valid.
        write_map(maps, "a.yaml", _map_of(80))
        assert reload_maps(store, maps, now=NOW).removed == 91


def test_the_drop_guard_counts_live_bindings_only(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    text = "defaults: {timezone: UTC}\n" + _map_of(100).replace(
        "a: 010-2222-", "expires: 2030-01-01T00:01:00Z, a: 010-2222-"
    )
    write_map(maps, "a.yaml", text)
    guard = DropGuard(0.10, 0)
    with Store(tmp_path / "s.lmdb", map_size=32 << 20) as store:
        assert reload_maps(store, maps, now=NOW, guard=guard).ok
        write_map(maps, "a.yaml", "ax: []\n")
        # An hour later every binding has expired: removing them drops nothing live.
        result = reload_maps(store, maps, now=NOW + 3600, guard=guard)
        assert result.ok and result.removed == 100


def test_emptying_the_maps_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    maps = tmp_path / "maps"
    write_map(maps, "a.yaml", MAP_V1)
    write_map(maps, "b.yaml", "# nothing yet\n")
    with Store(tmp_path / "s.lmdb", map_size=32 << 20) as store:
        with caplog.at_level(logging.WARNING, logger="translate.reload"):
            first = reload_maps(store, maps, now=NOW, guard=DropGuard())
        assert first.warnings == [f"{maps / 'b.yaml'}: holds no bindings"]
        (maps / "a.yaml").write_text("")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="translate.reload"):
            emptied = reload_maps(store, maps, now=NOW, guard=DropGuard())
        assert emptied.ok and emptied.removed == 2  # within the allowance of 10
        assert emptied.warnings == [
            f"{maps / 'a.yaml'}: holds no bindings",
            f"{maps / 'b.yaml'}: holds no bindings",
            "the number maps hold no bindings: all 2 YAML bindings were removed",
        ]
        assert [r.levelname for r in caplog.records].count("WARNING") == 3


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
        result = store.lookup(x, caller, time.time())
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
