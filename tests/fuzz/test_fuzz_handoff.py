"""Fuzz hand-off documents: handoff_from_dict gives a Handoff or a ConfigError, never another exception."""

from __future__ import annotations

import copy
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guestprep.errors import GuestprepError
from guestprep.finalize.config_builder import build_config
from guestprep.handoff import Handoff, handoff_from_dict
from tests.finalize.shapes import handoff_for
from tests.fuzz import FUZZ

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]

BASE = json.loads(json.dumps(handoff_for("multi-disk-multi-nic-vlan").to_dict()))
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False) |
                    st.text(max_size=30) | st.sampled_from(["/etc/shadow", "/dev/sda", "x:y\n", "../..", "direct",
                                                            "local-zfs:vm-1-disk-0,import-from=/etc/passwd"]),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=12)


def _paths(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


PATHS = sorted(_paths(BASE), key=repr)


def _set(doc, path, value):
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(PATHS), JSON), min_size=1, max_size=4))
def test_mutated_handoff_loads_or_is_a_clean_error(mutations):
    doc = copy.deepcopy(BASE)
    for path, value in mutations:
        try:
            _set(doc, path, value)
        except (KeyError, IndexError, TypeError):
            pass                         # an earlier mutation replaced the container
    start = time.monotonic()
    try:
        h = handoff_from_dict(doc, "fuzz.json")
        assert isinstance(h, Handoff)
        build_config(h, 100)             # the loaded document also builds, or refuses cleanly
    except GuestprepError as e:
        assert str(e)
    assert time.monotonic() - start < 5.0


@FUZZ
@given(JSON)
def test_arbitrary_json_is_a_clean_error(value):
    try:
        handoff_from_dict(value, "fuzz.json")
    except GuestprepError:
        pass
