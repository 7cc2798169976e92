"""Collector parsing: raw collector JSON -> typed facts, per distribution family (data fixtures)."""

from __future__ import annotations

import json
import subprocess

import pytest

from guestprep.errors import CollectorError
from guestprep.facts import linux, to_jsonable
from tests.support.fixtures import FACTS_DIR, assert_subset

pytestmark = pytest.mark.unit

FIXTURES = sorted(FACTS_DIR.glob("*.json"))


def test_fixtures_cover_every_family():
    families = {linux.parse(json.loads(p.read_text())["raw"]).family for p in FIXTURES}
    assert {"debian", "rhel", "suse", "arch"} <= families
    generators = {linux.parse(json.loads(p.read_text())["raw"]).initramfs_generator for p in FIXTURES}
    assert {"dracut", "initramfs-tools", "mkinitcpio"} <= generators


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_parse_fixture(path):
    doc = json.loads(path.read_text())
    facts = to_jsonable(linux.parse(doc["raw"]))
    assert_subset(doc["expect"], facts)


@pytest.mark.parametrize("shell", ["sh", "dash", "busybox sh"])
def test_real_collector_runs_under_posix_shells(shell):
    """The real collector on this machine, under dash and busybox ash: one valid document."""
    from guestprep.scripts import script_path

    argv = shell.split() + [str(script_path("linux", "collect.sh"))]
    res = subprocess.run(argv, capture_output=True, timeout=120)
    raw = linux.decode_output(res.stdout, res.returncode, res.stderr)
    facts = linux.parse(raw)
    assert facts.hostname
    assert facts.distro_id == "debian"
    assert facts.mount("/") is not None and facts.mount("/").free_bytes > 0
    assert facts.interfaces, "at least one NIC with a MAC"


def test_collector_has_no_bashisms():
    text = linux.collector_script()
    assert text.startswith("#!/bin/sh")
    import re

    for pattern in (r"\[\[ ", r" \]\]", r"^\s*function\s", r"^\s*local\s", r"\$'\\", r"<<<", r"\bdeclare\s",
                    r"\$\{!", r"pipefail", r"^\s*source\s", r"\$\{\w+//", r"\$\(\(.*\*\*"):
        m = re.search(pattern, text, re.M)
        assert m is None, f"bashism {m.group(0)!r} in collect.sh"


@pytest.mark.parametrize("output,needle", [
    (b"", "printed nothing"),
    (b"not json at all", "not valid JSON"),
    (b'{"schema": "guestprep.linux.collect/1", "id": {', "truncated"),
    (b"[1, 2, 3]", "expected an object"),
    (b'{"schema": "something-else/9"}', "schema"),
    (b'{"schema": "guestprep.linux.collect/1", "id": "x"}', "'id'"),
])
def test_garbage_is_refused_with_a_clear_error(output, needle):
    with pytest.raises(CollectorError) as exc:
        linux.parse(linux.decode_output(output, 0, b""))
    assert needle in str(exc.value)


def test_oversized_output_is_refused_without_parsing():
    big = b"{" + b" " * (linux.MAX_OUTPUT + 1) + b"}"
    with pytest.raises(CollectorError, match="over the"):
        linux.decode_output(big)


def test_secrets_in_network_files_are_redacted_in_the_guest(tmp_path):
    """The collector's redact filter runs in the guest: keys never leave it."""
    script = linux.collector_script()
    start = script.index("redact() {")
    func = script[start: script.index("\n}\n", start) + 3]
    text = "[wifi-security]\nkey-mgmt=wpa-psk\npsk=hunter2-secret\n[802-1x]\npassword=S3cret!\n"
    res = subprocess.run(["sh", "-c", func + "\nredact"], input=text.encode(), capture_output=True)
    out = res.stdout.decode()
    assert "hunter2-secret" not in out and "S3cret!" not in out
    assert "psk= <redacted>" in out and "key-mgmt=wpa-psk" in out
