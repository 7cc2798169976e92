"""Inventories: fleet YAML and Ansible (YAML, INI); every error names file, line and field."""

from __future__ import annotations

import pytest

from guestprep import inventory
from guestprep.errors import ConfigError
from guestprep.models import OSFamily, Transport

pytestmark = pytest.mark.unit


def write(tmp_path, text, name="fleet.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_fleet_yaml_with_groups_and_defaults(tmp_path):
    p = write(tmp_path, """
version: 1
defaults:
  user: admin
  sudo: true
  sudo_password_env: FLEET_SUDO
groups:
  db:
    vars: {port: 2222, vars: {tier: db}}
guests:
  - name: db1
    address: 10.0.0.5
    groups: [db]
  - name: web1
    address: web1.example.com
    user: root
    key_file: ~/.ssh/id_ed25519
  - name: win1
    address: 10.0.0.9
    transport: winrm
    os: windows
    password_env: WIN1_PW
""")
    db1, web1, win1 = inventory.load(p)
    assert db1.port == 2222 and db1.credentials.user == "admin" and db1.credentials.sudo
    assert db1.vars == {"tier": "db"} and db1.groups == ("db",)
    assert db1.source == f"{p}:11" and (db1.origin, db1.line) == (str(p), 11)
    assert db1.inventory_dir == p.parent and db1.to_dict()["source"] == f"{p}:11" and "origin" not in db1.to_dict()
    assert web1.credentials.user == "root" and web1.port is None and web1.credentials.key_file == "~/.ssh/id_ed25519"
    assert win1.transport is Transport.WINRM and win1.os is OSFamily.WINDOWS and win1.credentials.password_env == "WIN1_PW"


@pytest.mark.parametrize("text,needle,line", [
    ("guests:\n  - name: a\n    adress: 1.2.3.4\n", "unknown field 'adress' in guest #1 (did you mean 'address'?)", 3),
    ("guests:\n  - name: a\n    address: [1\n", "invalid YAML", None),
    ("guests:\n  - name: a\n    address: 'x;rm -rf /'\n", "not a host name", 3),
    ("guests:\n  - name: a\n    address: h\n    user: \"$(reboot)\"\n", "not allowed in a user name", 4),
    ("guests:\n  - name: a\n    address: h\n    user: \"root\\nx\"\n", "not allowed in a user name", 4),
    ("guests:\n  - name: 'a b'\n    address: h\n", "guest name", 2),
    ("guests:\n  - name: a\n    address: h\n    port: 70000\n", "port", 4),
    ("guests:\n  - name: a\n    address: h\n    password_env: hunter2!\n", "environment variable", 4),
    ("guests:\n  - name: a\n    address: h\n    transport: telnet\n", "not one of", 4),
    ("guests:\n  - name: a\n    address: h\n    groups: [nope]\n", "unknown group", 4),
    ("guests:\n  - name: a\n    address: h\n  - name: a\n    address: h\n", "defined twice", 4),
    ("guests: {}\n", "must be a list", 1),
    ("hello\n", "must be a mapping", 1),
    ("", "empty", None),
])
def test_bad_fleet_yaml(tmp_path, text, needle, line):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        inventory.load(p)
    msg = str(exc.value)
    assert needle in msg
    assert str(p) in msg
    if line:
        assert f"{p}:{line}" in msg


def test_ansible_ini(tmp_path):
    p = write(tmp_path, """
# production
[web]
web1 ansible_host=10.0.0.11 ansible_user=deploy ansible_port=2200
web2 ansible_host=10.0.0.12

[db]
db1 ansible_host=10.0.0.21 ansible_ssh_private_key_file=/keys/db ansible_become=true

[windows]
dc1 ansible_host=10.0.0.31 ansible_connection=winrm ansible_winrm_transport=ntlm guestprep_password_env=DC1_PW

[prod:children]
web
db

[prod:vars]
ansible_user=ops

[web:vars]
ansible_become=yes
""", "hosts.ini")
    g = {x.name: x for x in inventory.load(p)}
    assert g["web1"].address == "10.0.0.11" and g["web1"].port == 2200 and g["web1"].credentials.user == "deploy"
    assert g["web2"].credentials.user == "ops" and g["web2"].credentials.sudo is True   # group vars, child wins
    assert set(g["web2"].groups) == {"web", "prod"}
    assert g["db1"].credentials.key_file == "/keys/db" and g["db1"].credentials.sudo is True
    assert g["dc1"].transport is Transport.WINRM and g["dc1"].os is OSFamily.WINDOWS
    assert g["dc1"].credentials.password_env == "DC1_PW"
    assert g["dc1"].vars["ansible_winrm_transport"] == "ntlm"
    assert g["web1"].source == f"{p}:4" and (g["web1"].origin, g["web1"].line) == (str(p), 4)


def test_ansible_yaml(tmp_path):
    p = write(tmp_path, """
all:
  vars:
    ansible_user: ops
  hosts:
    bastion:
      ansible_host: 192.0.2.1
  children:
    linux:
      vars: {ansible_become: true}
      hosts:
        app1: {ansible_host: 192.0.2.10, ansible_port: 22}
    windows:
      vars: {ansible_connection: psrp, ansible_psrp_configuration_name: JEA}
      hosts:
        win1: {ansible_host: 192.0.2.20}
""", "inventory.yml")
    g = {x.name: x for x in inventory.load(p)}
    assert g["bastion"].credentials.user == "ops" and g["bastion"].groups == ()
    assert g["app1"].credentials.sudo and g["app1"].groups == ("linux",)
    assert g["win1"].transport is Transport.PSRP and g["win1"].vars["ansible_psrp_configuration_name"] == "JEA"


@pytest.mark.parametrize("text,needle", [
    ("[web]\nweb1 ansible_host=a;b\n", "not a host name"),
    ("[web]\nweb1 ansible_connection=docker\n", "not supported"),
    ("[web\nweb1\n", "malformed section"),
    ("[web:bogus]\nweb1\n", "unknown section kind"),
    ("[web]\nweb[01:10].example.com\n", "ranges"),
    ("[web]\nweb1 ansible_port=abc\n", "not a number"),
    ("[web]\nweb1 ansible_user='$(id)'\n", "user name"),
])
def test_bad_ansible_ini(tmp_path, text, needle):
    p = write(tmp_path, text, "hosts.ini")
    with pytest.raises(ConfigError) as exc:
        inventory.load(p)
    assert needle in str(exc.value) and str(p) in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        inventory.load(tmp_path / "nope.yaml")


def test_a_guest_not_from_a_file_has_an_origin_and_no_line():
    g = inventory.local_guest()
    assert (g.origin, g.line, g.source) == ("--local", None, "--local")
    assert str(g.inventory_dir) == "."
