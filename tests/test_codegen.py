"""``generate``: the typed module for a schema imports, decodes like the run-time classes, round-trips,
refuses a schema that moved on, and passes ruff and mypy --strict (while a wrong use fails mypy)."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from rx_spacetimedb.cli import main
from rx_spacetimedb.errors import SchemaError
from rx_spacetimedb.protocol.codegen import generate_module, snake_case
from rx_spacetimedb.protocol.schema import ModuleSchema
from rx_spacetimedb.protocol.types import RefType
from rx_spacetimedb.protocol.values import SumValue
from rx_spacetimedb.testing import SpacetimeDBEmulator, example_module
from tests._schemas import draw_value, generated, imported, plain_value, random_schema, rich_schema

ROOT = Path(__file__).resolve().parent.parent
PLAYER_ROW = '[1,["0x01"],"alice",3,[5],[0,[1.0,2.0]]]'


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def classes_in(value: Any) -> set[type]:
    """The classes of a value and of everything inside it."""
    found = {type(value)}
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            found |= classes_in(getattr(value, f.name))
    elif isinstance(value, tuple):
        for item in value:
            found |= classes_in(item)
    return found


def variant_tags(module: Any) -> dict[type, int]:
    return {cls: tag for members in module.GENERATED.sums.values() for tag, cls in enumerate(members)}


# -- the example module ----------------------------------------------------------------------------


def test_the_example_module_decodes_into_its_generated_classes() -> None:
    data = example_module().build().to_json()
    with imported(generated(data)) as mod:
        schema = ModuleSchema.from_json(data, row_classes=mod.ROW_TYPES)
        row = schema.decode_row("Player", PLAYER_ROW)
        assert type(row) is mod.Player and type(row.location) is mod.Location
        assert row == mod.Player(row.id, row.identity, "alice", 3, row.created_at, mod.Location(1.0, 2.0))
        runtime = ModuleSchema.from_json(data).decode_row("Player", PLAYER_ROW)
        assert plain_value(row, {}) == plain_value(runtime, {})
        assert mod.SCHEMA_VERSION == 9 and len(mod.SCHEMA_HASH) == 16


def test_generated_classes_take_the_c_fast_path_with_slot_setters() -> None:
    data = example_module().build().to_json()
    with imported(generated(data)) as mod:
        schema = ModuleSchema.from_json(data, row_classes=mod.ROW_TYPES)
        plan = schema.codec.plan(RefType(schema.table("Player").product_type_ref))
        assert plan[0] == "product" and plan[1] is mod.Player
        assert plan[3] is not None  # the slot setters: built as the run-time classes are, no __init__


def test_a_database_whose_schema_differs_is_refused_naming_the_first_difference() -> None:
    data = example_module().build().to_json()
    with imported(generated(data)) as mod:
        changed = json.loads(json.dumps(data))
        changed["reducers"][1]["params"]["elements"][1]["algebraic_type"] = {"I64": []}
        with pytest.raises(SchemaError, match=r"reducer SetScore: generated for \{id: U64, score: I32\}, "
                                              r"the database has \{id: U64, score: I64\}"):
            ModuleSchema.from_json(changed, row_classes=mod.ROW_TYPES)
        fewer = {**data, "tables": data["tables"][:2]}
        with pytest.raises(SchemaError, match="table Account is in the generated module, not in the data"):
            ModuleSchema.from_json(fewer, row_classes=mod.ROW_TYPES)


def test_a_module_of_another_schema_format_is_refused() -> None:
    data = example_module().build().to_json()
    source = generated(data).replace("SCHEMA_VERSION = 9", "SCHEMA_VERSION = 8")
    with imported(source) as mod, pytest.raises(SchemaError, match=r"schema format 8.*reads 9"):
        ModuleSchema.from_json(data, row_classes=mod.ROW_TYPES)


def test_connect_with_row_types_of_another_schema_fails_at_connect(server: SpacetimeDBEmulator) -> None:
    import rx_spacetimedb

    data = rich_schema()
    with imported(generated(data)) as mod:
        conn = rx_spacetimedb.connect(server.url, server.database, row_types=mod.ROW_TYPES, reconnect=False)
        try:
            with pytest.raises(SchemaError, match="regenerate it"):
                conn.wait_connected(10)
        finally:
            conn.close()


def test_generated_reducers_procedures_and_tables_against_the_emulator(server: SpacetimeDBEmulator) -> None:
    import rx_spacetimedb

    data = example_module().build().to_json()
    with imported(generated(data)) as mod:
        conn = rx_spacetimedb.connect(server.url, server.database, row_types=mod.ROW_TYPES,
                                      subscribe=["SELECT * FROM Player"])
        try:
            conn.wait_connected(10)
            db, reducers = mod.Tables(conn), mod.Reducers(conn)
            reducers.create_player("alice").result(10)
            reducers.create_player("bob").result(10)
            alice = db.player.id.find(1)
            assert isinstance(alice, mod.Player) and alice.name == "alice"
            reducers.set_score(alice.id, 7).result(10)
            assert db.player.id.find(1).score == 7
            assert [p.name for p in db.player.id.range(2)] == ["bob"]
            assert {p.name for p in db.player.rows()} == {"alice", "bob"} and db.player.count() == 2
            assert mod.Procedures(conn).find_player("bob").result(10) == db.player.id.find(2)
            with db.player.live() as live:
                assert {p.name for p in live.rows()} == {"alice", "bob"}
        finally:
            conn.close()


# -- many schemas ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_schemas_generate_modules_that_decode_like_the_runtime(data: st.DataObject) -> None:
    schema_data = random_schema(data)
    runtime = ModuleSchema.from_json(schema_data)
    with imported(generate_module(runtime)) as mod:
        bound = ModuleSchema.from_json(schema_data, row_classes=mod.ROW_TYPES)
        tags = variant_tags(mod)
        for table in runtime.tables.values():
            for _ in range(2):
                text = json.dumps(draw_value(data, RefType(table.product_type_ref), list(runtime.typespace)))
                row = bound.decode_row(table.name, text)
                assert type(row) is mod.ROW_TYPES[table.name]
                assert not any(cls is SumValue or cls.__module__ == "rx_spacetimedb.rows"
                               for cls in classes_in(row)), "a run-time class inside a generated row"
                assert plain_value(row, tags) == plain_value(runtime.decode_row(table.name, text), tags)
                for form in ("B", "C"):
                    assert bound.decode_row(table.name, bound.encode_row(table.name, row, form)) == row
        assert isinstance(mod.Reducers, type) and isinstance(mod.Tables, type)


def test_escaped_and_clashing_names() -> None:
    assert snake_case("CreatePlayer") == "create_player"
    assert snake_case("HTTPServer2Go") == "http_server2_go"
    assert snake_case("class") == "class_"
    with imported(generated(rich_schema())) as mod:
        entity = mod.Entity
        assert [f for f in entity.__dataclass_fields__] == ["class_", "str", "shape", "pos", "path", "big",
                                                            "_1st", "data"]
        assert mod.Shape == mod.ShapeCircle | mod.ShapeRect | mod.ShapeEmpty
        assert list(inspect.signature(mod.Reducers.self).parameters) == ["self", "self_"]  # reducer "self"
        assert list(inspect.signature(mod.Reducers.move).parameters) == ["self", "entity_id", "to"]


# -- ruff and mypy -------------------------------------------------------------------------------

GOOD_USE = '''
from __future__ import annotations

from typing import assert_never

from rx_spacetimedb import connect
from rx_spacetimedb.operators import LiveTable
from rx_spacetimedb.protocol.values import ScheduleAt

from rich import ROW_TYPES, Entity, Reducers, Shape, ShapeCircle, ShapeEmpty, ShapeRect, Tables, Vec2


def area(shape: Shape) -> float:
    match shape:
        case ShapeCircle(r):
            return 3.14 * r * r
        case ShapeRect(v):
            return v.x * v.y
        case ShapeEmpty():
            return 0.0
        case _:
            assert_never(shape)


def use() -> None:
    conn = connect("localhost", "db", row_types=ROW_TYPES)
    db = Tables(conn)
    entity = db.entity.class_.find(5)
    if entity is not None:
        text: str = entity.str
        big: int = entity.big + entity._1st
        where: Vec2 | None = entity.pos
        steps: tuple[Vec2, ...] = entity.path
        print(text, big, where, steps, area(entity.shape), entity.data.hex())
    same: tuple[Entity, ...] = db.entity.str.filter("a") + db.entity.str.range("a", "b")
    live: LiveTable[Entity] = db.entity.live()
    tick = db.tick.scheduled_id.find(1)
    when: ScheduleAt | None = tick.scheduled_at if tick is not None else None
    Reducers(conn).move(1, Vec2(1.0, 2.0)).result()
    print(same, live, when)
'''

BAD_USE = '''
from __future__ import annotations

from rx_spacetimedb import connect

from rich import ROW_TYPES, Reducers, Tables, Vec2

conn = connect("localhost", "db", row_types=ROW_TYPES)
entity = Tables(conn).entity.class_.find(5)
assert entity is not None
count: int = entity.str  # error: a str field used as an int
Reducers(conn).move("1", Vec2(1.0, 2.0))  # error: a reducer called with a wrong argument type
Tables(conn).entity.str.find("a")  # error: find on a btree (non-unique) index
Vec2(1.0)  # error: a missing field
'''


def random_modules(count: int) -> list[str]:
    """The generated sources of ``count`` random schemas (the same ones every run)."""
    sources: list[str] = []

    @settings(max_examples=count, derandomize=True, database=None, phases=[Phase.generate])
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        sources.append(generated(random_schema(data)))

    collect()
    return sources


def test_generated_modules_pass_ruff_and_mypy_strict_and_a_wrong_use_fails(tmp_path: Path) -> None:
    modules = {"example_db.py": generated(example_module().build().to_json()),
               "rich.py": generated(rich_schema())}
    modules.update((f"random_{i}.py", source) for i, source in enumerate(random_modules(8)))
    for name, source in modules.items():
        (tmp_path / name).write_text(source)
    (tmp_path / "good_use.py").write_text(GOOD_USE)
    (tmp_path / "bad_use.py").write_text(BAD_USE)
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config",
                           str(ROOT / "pyproject.toml"), *modules],
                          cwd=tmp_path, capture_output=True, text=True)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    mypy = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-version",
                           "3.11", *modules, "good_use.py", "bad_use.py"],
                          cwd=tmp_path, capture_output=True, text=True, env=env)
    errors = [line for line in mypy.stdout.splitlines() if ": error:" in line]
    expected = [i for i, line in enumerate(BAD_USE.splitlines(), 1) if "# error:" in line]
    lines = sorted({int(e.split(":")[1]) for e in errors if e.startswith("bad_use.py")})
    assert lines == expected, mypy.stdout
    assert all(e.startswith("bad_use.py") for e in errors), mypy.stdout


# -- the command line ------------------------------------------------------------------------------


def test_generate_from_a_schema_file_and_from_a_live_database(tmp_path: Path, server: SpacetimeDBEmulator,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPACETIMEDB_TOKEN", raising=False)
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(example_module().build().to_json()))
    code, _, err = run("generate", "--schema", str(schema_file), "--out", str(tmp_path / "a.py"))
    assert code == 0 and "wrote" in err and "3 tables, 5 reducers, 1 procedures" in err
    code, _, err = run("generate", "--host", server.url, "--database", server.database,
                       "--out", str(tmp_path / "b.py"))
    assert code == 0, err
    assert (tmp_path / "a.py").read_text().replace("(schema.json)", "") == \
        (tmp_path / "b.py").read_text().replace(f"(database {server.database})", "")
    code, out, _ = run("generate", "--schema", str(schema_file), "--out", "-")
    assert code == 0 and "class Player:" in out


def test_generate_reports_bad_input_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPACETIMEDB_TOKEN", raising=False)
    out = str(tmp_path / "x.py")
    assert run("generate", "--out", out)[0] == 2
    code, _, err = run("generate", "--schema", str(tmp_path / "none.json"), "--out", out)
    assert code == 2 and "cannot read" in err
    (tmp_path / "bad.json").write_text("{]")
    code, _, err = run("generate", "--schema", str(tmp_path / "bad.json"), "--out", out)
    assert code == 2 and "not a module schema" in err
    code, _, err = run("generate", "--database", "db", "--host", "127.0.0.1", "--port", "1", "--out", out)
    assert code == 3 and "cannot" in err
    assert not (tmp_path / "x.py").exists()


# -- run-time rows (no codegen) -------------------------------------------------------------------


def test_runtime_rows_pickle_and_copy() -> None:
    schema = example_module().build()
    row = schema.decode_row("Player", PLAYER_ROW)
    assert pickle.loads(pickle.dumps(row)) == row
    assert copy.copy(row) == row and copy.deepcopy(row) == row
    assert type(pickle.loads(pickle.dumps(row))) is type(row)


def test_runtime_rows_unpickle_in_another_process() -> None:
    schema = example_module().build()
    row = schema.decode_row("Player", PLAYER_ROW)
    code = ("import pickle, sys; row = pickle.loads(sys.stdin.buffer.read()); "
            "print(row.name, row.location.x, type(row).__name__)")
    done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(row), capture_output=True,
                          cwd=ROOT, timeout=60)
    assert done.stdout.decode().split() == ["alice", "1.0", "Player"], done.stderr.decode()
