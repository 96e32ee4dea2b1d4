"""Record: immutable value objects with dataclass semantics and no code generation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kzguard.base.record import Factory, Record


class Point(Record):
    x: int
    y: int = 0
    tags: dict = Factory(dict)
    note: str = ""
    _uncompared = frozenset({"note"})


class Point3(Point):
    z: int = 0


def test_fields_defaults_and_factories():
    p = Point(1)
    assert (p.x, p.y, p.tags, p.note) == (1, 0, {}, "")
    assert Point(1).tags is not Point(1).tags
    assert Point(1, y=2)._asdict() == {"x": 1, "y": 2, "tags": {}, "note": ""}
    assert Point3._fields == ("x", "y", "tags", "note", "z")
    assert Point3(1, z=3).z == 3


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1, 2, {}, "", 5), {}), ((1,), {"x": 2}), ((1,), {"w": 2})],
)
def test_bad_arguments_are_type_errors(args, kwargs):
    with pytest.raises(TypeError):
        Point(*args, **kwargs)


def test_immutable():
    p = Point(1)
    with pytest.raises(AttributeError, match="immutable"):
        p.x = 2
    with pytest.raises(AttributeError, match="immutable"):
        del p.x


def test_equality_hash_and_uncompared_fields():
    assert Point(1, note="a") == Point(1, note="b")
    assert Point(1) != Point(2)
    assert Point(1) != Point3(1)
    assert Point(1) != (1, 0, {}, "")
    assert hash(Point(1, 2, tags=None)) == hash(Point(1, 2, tags=None))


def test_replace_and_repr():
    p = Point(1)._replace(y=5)
    assert p == Point(1, 5)
    assert repr(p) == "Point(x=1, y=5, tags={}, note='')"


def test_required_field_after_default_is_refused():
    with pytest.raises(TypeError, match="follows a default"):

        class Bad(Record):
            a: int = 0
            b: int


def test_importing_record_imports_no_dataclasses():
    code = "import sys, kzguard.base.record; print('dataclasses' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
