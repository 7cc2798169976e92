"""Fuzz the inventory parsers (fleet YAML, Ansible YAML and INI).

Property: ``inventory.load`` returns guests or raises the project's own error (a
GuestprepError naming the file); never another exception, never a hang.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from guestprep import inventory
from guestprep.errors import GuestprepError
from guestprep.models import Guest
from tests.fuzz import FUZZ

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]

KEYS = sorted(inventory.GUEST_FIELDS) + ["ansible_host", "ansible_port", "ansible_user", "ansible_connection",
                                         "ansible_become", "ansible_winrm_operation_timeout_sec", "hosts", "children",
                                         "vars", "guests", "defaults", "groups", "version", "all"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["web1", "10.0.0.1", "[::1]", "ssh", "winrm", "psrp",
                                                           "local", "linux", "windows", "root", "PW", "yes", "abc"]))
values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8),
                                                                                st.integers()), kids, max_size=5)),
                      max_leaves=25)


def load_text(text: str | bytes, suffix: str):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"inv{suffix}"
        p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        try:
            guests = inventory.load(p)
        except GuestprepError as exc:
            assert str(p) in str(exc), str(exc)  # every error names the file
            return None
    assert guests and all(isinstance(g, Guest) for g in guests)
    for g in guests:  # what was accepted is what validation promises
        assert inventory.NAME_RE.fullmatch(g.name) and inventory.ADDRESS_RE.fullmatch(g.address)
    return guests


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=5))
def test_structured_yaml(doc):
    load_text(yaml.safe_dump(doc, allow_unicode=True), ".yaml")


@FUZZ
@given(st.lists(st.fixed_dictionaries({"name": scalars, "address": scalars}, optional={
    k: values for k in ("port", "os", "transport", "user", "password_env", "groups", "vars", "sudo", "agent")}),
    max_size=4), st.dictionaries(st.sampled_from(sorted(inventory.VAR_FIELDS)), values, max_size=3))
def test_fleet_yaml(guests, defaults):
    load_text(yaml.safe_dump({"defaults": defaults, "guests": guests}), ".yaml")


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text_as_yaml(text):
    load_text(text, ".yaml")


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data):
    load_text(data, ".yml")


ini_line = st.one_of(
    st.builds(lambda g, k: f"[{g}{k}]", st.sampled_from(["web", "all", "db", "", "a b", "x[1:3]"]),
              st.sampled_from(["", ":vars", ":children", ":bogus", ":"])),
    st.builds(lambda h, kv: " ".join([h, *kv]), st.sampled_from(["web1", "10.0.0.1", "h;rm", "'q", "web[1:2]", "#c", "=x"]),
              st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=10)), max_size=3)),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=10)),
    st.text(max_size=30),
)


@FUZZ
@given(st.lists(ini_line, min_size=1, max_size=12))
def test_ansible_ini(lines):
    load_text("\n".join(lines) + "\n", ".ini")
