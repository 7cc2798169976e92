"""Fuzz the Linux collector JSON parser (guestprep.facts.linux).

Starting from real collector documents (tests/facts/linux), any field may be replaced by
any JSON value, and any text field by hostile text. Property: ``decode_output`` + ``parse``
return LinuxFacts or raise CollectorError (a GuestprepError); never another exception, never a hang.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guestprep.errors import GuestprepError
from guestprep.facts import linux
from guestprep.facts.linux_model import LinuxFacts
from tests.fuzz import FUZZ

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "facts" / "linux").glob("*.json"))
DOCS = [json.loads(p.read_text())["raw"] for p in FIXTURES]

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**65, 2**65), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=30)),
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=10), kids, max_size=4)),
    max_leaves=20)
hostile_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["/dev/sda1", " ", "\t", "\n", "=", "UUID=", "LABEL=", "#", "\"", "'", "\\", "0",
                              "-1", "999999999999999999999", "ext4", "xfs", "none", "/", "[", "]", "\x00", "\x1b",
                              "root=", "rd.lvm.lv=", "virtio_scsi", "GRUB_CMDLINE_LINUX=", ":", ",", "%"]),
             max_size=40).map("".join),
)


def paths(node, prefix=()):
    """Every (path, value) of a JSON document."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, prefix + (i,))


def replaced(doc, path, value):
    doc = copy.deepcopy(doc)
    if not path:
        return value
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return doc


def check(raw) -> None:
    try:
        facts = linux.parse(raw)
    except GuestprepError:
        return
    assert isinstance(facts, LinuxFacts)


@FUZZ
@given(st.integers(0, len(DOCS) - 1), st.data())
def test_any_field_replaced_by_any_json(i, data):
    doc = DOCS[i]
    all_paths = [p for p, _ in paths(doc)]
    changes = data.draw(st.lists(st.tuples(st.sampled_from(all_paths), st.one_of(json_values, hostile_text)),
                                 min_size=1, max_size=4))
    for path, value in changes:
        try:
            doc = replaced(doc, path, value)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed this path
    check(doc)


@FUZZ
@given(st.integers(0, len(DOCS) - 1), st.data())
def test_text_fields_replaced_by_hostile_text(i, data):
    doc = DOCS[i]
    text_paths = [p for p, v in paths(doc) if isinstance(v, str)]
    for path in data.draw(st.lists(st.sampled_from(text_paths), min_size=1, max_size=8)):
        doc = replaced(doc, path, data.draw(hostile_text))
    check(doc)


@FUZZ
@given(st.one_of(st.binary(max_size=500), json_values.map(lambda v: json.dumps(v).encode()),
                 st.integers(0, len(DOCS) - 1).map(lambda i: json.dumps(DOCS[i]).encode()).flatmap(
                     lambda b: st.integers(0, len(b)).map(lambda n: b[:n]))))
def test_decode_output_of_any_bytes(data):
    try:
        raw = linux.decode_output(data, 0, b"")
    except GuestprepError:
        return
    check(raw)
