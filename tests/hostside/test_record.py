"""hostside.record behaves as the standard dataclasses for what guestprep-host uses (issue 17: the
stdlib module's import and per-class exec cost ~40 ms of every conversion's start-up). Each case is
run through both decorators and must agree; tests/hostside/test_startup_imports.py holds that a
conversion no longer loads `dataclasses` or `inspect`."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from hostside import record


def _pair(build):
    return build(dataclasses.dataclass, dataclasses.field), build(record.dataclass, record.field)


def _extent(dc, field):
    @dc
    class Extent:
        kind: str
        size: int
        offset: int = 0
        notes: list = field(default_factory=list)
        secret: dict = field(default_factory=dict, repr=False)
        LIMIT: ClassVar[int] = 7
    return Extent


@pytest.mark.parametrize("args,kwargs", [(("FLAT", 10), {}), (("SPARSE",), {"size": 3, "offset": 5}),
                                         ((), {"kind": "ZERO", "size": 1, "notes": ["x"]})])
def test_init_repr_eq_agree(args, kwargs):
    std, ours = _pair(_extent)
    a, b = std(*args, **kwargs), ours(*args, **kwargs)
    assert repr(a) == repr(b)                                     # repr=False field left out, as stdlib
    assert ours(*args, **kwargs) == b and ours(*args, **kwargs) is not b
    assert b != ours("OTHER", 99) and (b == a) is False           # another class is never equal
    assert ours(*args, **kwargs).notes is not ours(*args, **kwargs).notes or kwargs.get("notes")  # a factory per instance
    assert ours.LIMIT == 7 and "LIMIT" not in {f.name for f in record.fields(ours)}


@pytest.mark.parametrize("call", [lambda c: c(), lambda c: c("A", 1, 2, [], {}, 9), lambda c: c("A", 1, size=2),
                                  lambda c: c("A", 1, nope=3)])
def test_bad_calls_raise_type_error_like_stdlib(call):
    std, ours = _pair(_extent)
    with pytest.raises(TypeError):
        call(std)
    with pytest.raises(TypeError):
        call(ours)


def test_mutable_instances_are_unhashable_frozen_ones_hash_and_refuse_assignment():
    _, ours = _pair(_extent)
    with pytest.raises(TypeError):
        hash(ours("A", 1))

    @record.dataclass(frozen=True)
    class Key:
        path: str
        size: int = 0

    k = Key("/x", 3)
    assert hash(k) == hash(Key("/x", 3)) and {k: 1}[Key("/x", 3)] == 1
    with pytest.raises(record.FrozenInstanceError):
        k.size = 4
    with pytest.raises(AttributeError):       # stdlib's FrozenInstanceError is an AttributeError too
        del k.path


def test_post_init_inheritance_and_own_methods():
    @record.dataclass
    class Base:
        a: int
        b: int = 2

        def __post_init__(self):
            self.total = self.a + self.b

    @record.dataclass
    class Child(Base):
        c: int = 3

        def __repr__(self):
            return "mine"

    c = Child(1, c=5)
    assert (c.a, c.b, c.c, c.total) == (1, 2, 5, 3)
    assert repr(c) == "mine" and [f.name for f in record.fields(Child)] == ["a", "b", "c"]


def test_definition_errors_match_stdlib():
    for dc, field in ((dataclasses.dataclass, dataclasses.field), (record.dataclass, record.field)):
        with pytest.raises(TypeError):
            @dc
            class Bad:
                a: int = 1
                b: int
        with pytest.raises(ValueError):
            @dc
            class Shared:
                items: list = []
