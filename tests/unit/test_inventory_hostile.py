"""Hostile and broken inventories (issue 13, items 13 and 14): clear errors with file:line, bounded work."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guestprep import inventory
from guestprep.errors import ConfigError

pytestmark = pytest.mark.unit


def write(tmp_path: Path, text: str, name: str = "fleet.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def guestprep(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guestprep.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


# --------------------------------------------------------------------------- item 13: full-match validation


@pytest.mark.parametrize("field,value", [("name", '"web1\\n"'), ("address", '"10.0.0.1\\n"'), ("user", '"root\\n"'),
                                         ("password_env", '"PW\\n"')])
def test_a_trailing_newline_is_not_a_valid_value(tmp_path, field, value):
    entry = {"name": '"web1"', "address": "10.0.0.1", field: value}
    p = write(tmp_path, "guests:\n  - " + "\n    ".join(f"{k}: {v}" for k, v in entry.items()) + "\n")
    with pytest.raises(ConfigError, match=rf"{p}:\d+ \(field '{field}'\)"):
        inventory.load(p)


@pytest.mark.parametrize("target", ["host\n", "root@host\n", "root\n@host"])
def test_adhoc_targets_are_full_matched(target):
    with pytest.raises(ConfigError):
        inventory.adhoc_guest(target)


# --------------------------------------------------------------------------- item 14: bounded work


def alias_ladder(levels: int) -> str:
    lines = ["g0: &g0", "  hosts:", "    h1: {ansible_host: 10.0.0.1}", "    h2: {ansible_host: 10.0.0.2}"]
    for k in range(1, levels + 1):
        lines += [f"g{k}: &g{k}", "  children:", f"    a{k}: *g{k - 1}", f"    b{k}: *g{k - 1}"]
    return "\n".join(lines) + "\n"


def test_alias_reused_groups_are_walked_once(tmp_path):
    p = write(tmp_path, alias_ladder(30), "inventory.yml")  # 2**30 paths
    started = time.monotonic()
    guests = {g.name: g for g in inventory.load(p)}
    assert time.monotonic() - started < 5
    assert set(guests) == {"h1", "h2"} and guests["h1"].address == "10.0.0.1"
    assert {"g0", "a1", "b1", "g30", "a30"} <= set(guests["h1"].groups)  # every group above, once
    assert len(guests["h1"].groups) == len(set(guests["h1"].groups))


def test_group_vars_follow_ansible_order(tmp_path):
    p = write(tmp_path, """
all:
  vars: {ansible_user: everyone, tier: all}
  children:
    prod:
      vars: {tier: prod, ansible_port: 2200}
      children:
        web:
          vars: {tier: web}
          hosts:
            web1: {ansible_host: 10.0.0.1}
            web2: {ansible_host: 10.0.0.2, tier: own}
    other:
      hosts:
        web1:
""", "inventory.yml")
    g = {x.name: x for x in inventory.load(p)}
    assert g["web1"].vars["tier"] == "web" and g["web2"].vars["tier"] == "own"  # deeper group, then the host
    assert g["web1"].port == 2200 and g["web1"].credentials.user == "everyone"
    assert set(g["web1"].groups) == {"web", "prod", "other"}


@pytest.mark.parametrize("name", ["deep.yml", "deep.ini"])
def test_very_deep_nesting_is_a_clean_error_or_a_result(tmp_path, name):
    n = 20_000
    if name.endswith(".yml"):
        text = "all: " + "{children: {g: " * n + "{hosts: {h1: {ansible_host: 10.0.0.1}}}" + "}}" * n + "\n"
    else:
        text = "[g0]\nh1 ansible_host=10.0.0.1\n" + "".join(f"[g{i + 1}:children]\ng{i}\n" for i in range(n))
    p = write(tmp_path, text, name)
    res = guestprep("facts", "h1", "-i", p, "--raw", "--timeout", "1")  # exits before any connection
    assert "Traceback" not in res.stderr and "RecursionError" not in res.stderr, res.stderr[-2000:]
    if name.endswith(".yml"):
        assert res.returncode == 2 and "nested too deeply" in res.stderr and str(p) in res.stderr
    else:
        guests = inventory.load(p)
        assert len(guests[0].groups) == n + 1


def test_oversized_inventory_is_refused_before_parsing(tmp_path):
    p = tmp_path / "big.yaml"
    with open(p, "wb") as fh:
        fh.write(b"guests:\n")
        fh.truncate(inventory.MAX_INVENTORY_BYTES + 10)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"larger than 16 MiB"):
        inventory.load(p)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("line", ["dc1 ansible_connection=winrm ansible_winrm_operation_timeout_sec=abc",
                                  "dc1 ansible_connection=winrm ansible_winrm_read_timeout_sec=1e9",
                                  "dc1 ansible_connection=psrp ansible_psrp_operation_timeout=-5"])
def test_bad_windows_numbers_name_file_and_line(tmp_path, line):
    p = write(tmp_path, f"[windows]\n{line}\n", "hosts.ini")
    with pytest.raises(ConfigError, match=rf"{p}:2 \(host 'dc1'\).*whole number"):
        inventory.load(p)
    res = guestprep("facts", "dc1", "-i", p)
    assert res.returncode == 2 and "Traceback" not in res.stderr and f"{p}:2" in res.stderr


def test_unset_password_env_is_bad_input_with_file_and_line(tmp_path):
    p = write(tmp_path, "guests:\n  - name: a\n    address: 127.0.0.1\n  - name: b\n    address: 127.0.0.1\n"
                        "    password_env: GP_TEST_SURELY_UNSET_PW\n")
    env = {k: v for k, v in os.environ.items() if k != "GP_TEST_SURELY_UNSET_PW"}
    res = subprocess.run([sys.executable, "-m", "guestprep.cli", "preflight", "-i", str(p), "--out",
                          str(tmp_path / "r"), "--timeout", "2"], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"{p}:4" in res.stderr and "GP_TEST_SURELY_UNSET_PW" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r").exists()  # refused before any guest or report
