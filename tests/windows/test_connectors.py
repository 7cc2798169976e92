"""WinRM and PSRP connectors against the WS-Man test server (real pywinrm/pypsrp, real sockets)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from guestprep.connectors import open_connector
from guestprep.connectors.base import Script
from guestprep.errors import (EXIT_UNREACHABLE, CollectorError, CommandTimeout, ConfigError, ConnectionFailed,
                              OperationError)
from guestprep.facts import windows as wf
from tests.windows.conftest import PASSWORD, PW_ENV

pytestmark = pytest.mark.integration

SCRIPTS = Path(__file__).parent / "scripts"
BOTH = ["winrm", "psrp"]
MATRIX = [("winrm", "https", "basic"), ("winrm", "https", "ntlm"), ("winrm", "http", "ntlm"),
          ("psrp", "https", "basic"), ("psrp", "https", "negotiate"), ("psrp", "http", "ntlm")]


def script(name: str, params: dict | None = None) -> Script:
    return Script(text=(SCRIPTS / name).read_text(encoding="utf-8"), args=(json.dumps(params or {}),),
                  interpreter="powershell", name=name)


@pytest.mark.parametrize("transport,scheme,auth", MATRIX, ids=["-".join(m) for m in MATRIX])
def test_collect_over_every_transport_and_auth(wsman, transport, scheme, auth):
    run = wsman("ws2016-de-DE")
    conn = open_connector(run.make_guest(transport, scheme, auth), run.options())
    try:
        facts = wf.collect(conn, timeout=30)
    finally:
        conn.close()
    assert facts.hostname == "APP-DE-2016" and facts.os.locale == "de-DE"
    assert facts.pending_reboot is True
    assert run.guest.ran[-1] == "collect"
    if scheme == "http":  # NTLM over HTTP must travel encrypted (MS-WSMV), never in clear
        assert run.state.encrypted_bodies > 0
    assert "Delete" in run.state.requests  # shell closed


@pytest.mark.parametrize("profile", ["ws2012r2-en-US", "ws2016-de-DE", "ws2019-en-US", "ws2022-ja-JP",
                                     "ws2025-en-US", "win10-ru-RU", "win11-en-US"])
def test_collect_representative_guests(wsman, profile):
    run = wsman(profile)
    conn = open_connector(run.make_guest("winrm"), run.options())
    try:
        facts = wf.collect(conn, timeout=30)
    finally:
        conn.close()
    assert facts.supported and facts.os.build == run.guest.facts["os"]["build"]
    assert wf.summarize(facts)["os_name"] == run.guest.facts["os"]["caption"]  # non-Latin captions intact


def test_unsupported_guest_reports_reason_not_failure(wsman):
    run = wsman("ws2008r2-en-US")
    conn = open_connector(run.make_guest("psrp"), run.options())
    try:
        facts = wf.collect(conn, timeout=30)
    finally:
        conn.close()
    assert facts.supported is False and "older than Windows Server 2012" in facts.unsupported_reason
    from guestprep.checks import registry

    statuses = {f.check_id: f.status.value for f in registry.evaluate("windows", facts, "old")}
    assert statuses["WIN-OS-SUPPORTED"] == "fail" and statuses["WIN-VIRTIO-STORAGE-DRIVER"] == "skipped"


@pytest.mark.parametrize("transport", BOTH)
def test_wrong_password_is_a_clear_connection_failure_without_the_secret(wsman, transport, monkeypatch):
    run = wsman()
    monkeypatch.setenv(PW_ENV, "wrong-" + PASSWORD)
    with pytest.raises(ConnectionFailed) as ei:
        open_connector(run.make_guest(transport), run.options())
    msg = str(ei.value)
    assert "authentication failed" in msg and "Administrator" in msg and "win01" in msg
    assert PASSWORD not in msg and "wrong-" not in msg
    assert ei.value.exit_code == EXIT_UNREACHABLE


@pytest.mark.parametrize("transport", BOTH)
def test_expired_certificate_is_refused(wsman, transport):
    run = wsman(expired_cert=True)
    with pytest.raises(ConnectionFailed) as ei:
        open_connector(run.make_guest(transport), run.options())
    assert "TLS certificate verification failed" in str(ei.value) and "expired" in str(ei.value)


@pytest.mark.parametrize("transport", BOTH)
def test_untrusted_ca_is_refused_and_explicit_insecure_works(wsman, transport):
    run = wsman()
    with pytest.raises(ConnectionFailed, match="TLS certificate verification failed"):
        open_connector(run.make_guest(transport), run.options(ca_bundle=str(run.pki.other_ca_cert)))
    conn = open_connector(run.make_guest(transport), run.options(ca_bundle=None, insecure_tls=True))
    assert conn.run(["hostname"], timeout=20).text().strip() == "SQL-PROD-19"
    conn.close()


def test_ca_from_ansible_var(wsman):
    run = wsman()
    g = run.make_guest("winrm", ansible_winrm_ca_trust_path=str(run.pki.ca_cert))
    conn = open_connector(g, run.options(ca_bundle=None))
    assert conn.run(["hostname"], timeout=20).ok
    conn.close()


@pytest.mark.parametrize("transport,var", [("winrm", "ansible_winrm_server_cert_validation"),
                                           ("psrp", "ansible_psrp_cert_validation")])
def test_inventory_cannot_turn_verification_off_without_the_flag(wsman, transport, var):
    run = wsman()
    with pytest.raises(ConfigError, match="--insecure"):
        open_connector(run.make_guest(transport, **{var: "ignore"}), run.options())


@pytest.mark.parametrize("transport,auth", [("winrm", "basic"), ("psrp", "basic")])
def test_basic_over_http_is_refused(wsman, transport, auth):
    run = wsman()
    with pytest.raises(ConfigError, match="clear text"):
        open_connector(run.make_guest(transport, "http", auth), run.options())


def test_missing_password_env_is_a_config_error(wsman, monkeypatch):
    run = wsman()
    monkeypatch.delenv(PW_ENV)
    with pytest.raises(ConfigError, match=PW_ENV):
        open_connector(run.make_guest("winrm"), run.options())


@pytest.mark.parametrize("transport", BOTH)
def test_http_500_soap_fault_becomes_readable_error(wsman, transport):
    run = wsman(fault_on_create="Der Zugriff wurde verweigert (access denied by WinRM plugin)")
    with pytest.raises(ConnectionFailed) as ei:
        open_connector(run.make_guest(transport), run.options())
    assert "Der Zugriff wurde verweigert" in str(ei.value)


@pytest.mark.parametrize("transport", BOTH)
def test_script_that_never_ends_times_out_and_is_terminated(wsman, transport):
    run = wsman()
    conn = open_connector(run.make_guest(transport), run.options())
    try:
        with pytest.raises(CommandTimeout, match="did not finish within 3s"):
            conn.run(script("test-hang.ps1"), timeout=3)
    finally:
        conn.close()
    assert any(e.get("event") == "terminated" for e in run.state.log)


@pytest.mark.parametrize("transport", BOTH)
def test_non_latin_output_and_parameters_round_trip(wsman, transport):
    run = wsman("win10-ru-RU")
    conn = open_connector(run.make_guest(transport), run.options())
    params = {"path": "C:\\Данные\\日本語 файл.txt", "quote": "it's \"quoted\" $(whoami); & | `n"}
    try:
        res = conn.run(script("test-echo.ps1", params), timeout=20)
    finally:
        conn.close()
    doc = json.loads(res.text())
    assert res.rc == 0 and doc["echo"] == params
    assert doc["text"] == "Привет, мир — こんにちは — مرحبا"


@pytest.mark.parametrize("transport", BOTH)
def test_powershell_error_record_is_decoded(wsman, transport):
    run = wsman()
    conn = open_connector(run.make_guest(transport), run.options())
    try:
        res = conn.run(script("test-fail.ps1", {"message": "Zugriff verweigert: Ключ реестра"}), timeout=20)
    finally:
        conn.close()
    assert res.rc == 1
    assert res.err_text() == "Zugriff verweigert: Ключ реестра"   # no CLIXML left


@pytest.mark.parametrize("transport", BOTH)
def test_argv_passes_as_data_and_exit_codes_survive(wsman, transport):
    run = wsman()
    conn = open_connector(run.make_guest(transport), run.options())
    tricky = ["a b", 'q"uote', "$(Remove-Item C:\\ -Recurse)", "x; shutdown /s", "ü€"]
    try:
        assert conn.run(["cmd.exe", "/c", "exit", "7"], timeout=20).rc == 7
        out = conn.run(["echoargs.exe", *tricky], timeout=20)
    finally:
        conn.close()
    assert out.rc == 0 and out.text().splitlines() == tricky


@pytest.mark.parametrize("transport", BOTH)
def test_put_and_get_verify_and_never_overwrite(wsman, transport, tmp_path):
    run = wsman()
    conn = open_connector(run.make_guest(transport), run.options())
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(150_000))
    remote = "C:\\ProgramData\\guestprep\\media\\blob.bin"
    try:
        conn.put(str(src), remote)
        assert hashlib.sha256(run.guest.files[remote]).digest() == hashlib.sha256(src.read_bytes()).digest()
        conn.put(str(src), remote)  # identical: no-op
        other = tmp_path / "other.bin"
        other.write_bytes(b"different")
        with pytest.raises(OperationError, match="not overwriting"):
            conn.put(str(other), remote)
        back = tmp_path / "back.bin"
        conn.get(remote, str(back))
        assert back.read_bytes() == src.read_bytes()
        with pytest.raises(ConfigError, match="already exists"):
            conn.get(remote, str(back))
    finally:
        conn.close()
    assert not any(k.endswith(".guestprep-partial") for k in run.guest.files)


def test_psrp_jea_configuration_name(wsman):
    run = wsman(psrp_configurations=("Microsoft.PowerShell", "GuestprepJEA"))
    conn = open_connector(run.make_guest("psrp", ansible_psrp_configuration_name="GuestprepJEA"), run.options())
    assert wf.collect(conn, timeout=20).hostname == "SQL-PROD-19"
    conn.close()
    with pytest.raises(ConnectionFailed, match="Cannot find the NoSuchEndpoint session configuration"):
        open_connector(run.make_guest("psrp", ansible_psrp_configuration_name="NoSuchEndpoint"), run.options())


def test_psrp_no_language_jea_endpoint_is_a_clear_setup_error(wsman):
    run = wsman(psrp_configurations=("Microsoft.PowerShell", "RestrictedJEA"),
                no_language_configurations=("RestrictedJEA",))
    conn = open_connector(run.make_guest("psrp", ansible_psrp_configuration_name="RestrictedJEA"), run.options())
    try:
        with pytest.raises(ConfigError, match="'RestrictedJEA' runs in NoLanguage mode.*FullLanguage"):
            wf.collect(conn, timeout=20)
    finally:
        conn.close()
    assert run.guest.ran == []   # nothing executed on the guest


@pytest.mark.parametrize("output,what", [
    (b"Get-CimInstance : Zugriff verweigert\r\n", "not JSON"),
    (b'{"schema":"guestprep.windows.facts/1","supported":true,"hostname":"X","os":{"capt', "truncated JSON"),
    (b'["a list"]', "JSON list, expected an object"),
    (b'{"schema":"something/9","supported":true}', "expected 'guestprep.windows.facts/1'"),
    (b'{"schema":"guestprep.windows.facts/1","supported":true,"hostname":"X","os":null,"storage":{"disks":"C:"}}',
     "storage.disks"),
    (b"", "printed nothing"),
])
def test_collector_garbage_is_a_clear_error(wsman, output, what):
    run = wsman()
    run.guest.collect_override = output
    conn = open_connector(run.make_guest("winrm"), run.options())
    try:
        with pytest.raises(CollectorError) as ei:
            wf.collect(conn, timeout=20)
    finally:
        conn.close()
    assert what in str(ei.value) and "win01" in str(ei.value)


def test_unreachable_port_is_connection_failed(wsman):
    run = wsman()
    g = run.make_guest("winrm")
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    free = s.getsockname()[1]
    s.close()
    from dataclasses import replace

    with pytest.raises(ConnectionFailed, match="connection failed"):
        open_connector(replace(g, port=free, vars={**g.vars, "guestprep_winrm_retries": 0}), run.options())


@pytest.mark.parametrize("transport", BOTH)
def test_stdin_reaches_the_script(wsman, transport):
    run = wsman()
    conn = open_connector(run.make_guest(transport), run.options())
    try:
        res = conn.run(script("test-echo.ps1", {}), stdin="zeile 1\nстрока 2".encode("utf-8"), timeout=20)
    finally:
        conn.close()
    assert json.loads(res.text())["stdin"] == "zeile 1\nстрока 2"


def test_facts_cli_prints_windows_facts(wsman, tmp_path):
    import subprocess
    import sys

    import yaml

    run = wsman("ws2022-ja-JP")
    inv = tmp_path / "fleet.yaml"
    inv.write_text(yaml.safe_dump({"guests": [{
        "name": "web22", "address": "127.0.0.1", "port": run.server.https.port, "transport": "psrp",
        "os": "windows", "user": "Administrator", "password_env": PW_ENV,
        "vars": {"ansible_psrp_operation_timeout": 2}}]}))
    exe = str(Path(sys.executable).with_name("guestprep"))
    r = subprocess.run([exe, "facts", "web22", "-i", str(inv), "--ca-bundle", str(run.pki.ca_cert)],
                       capture_output=True, text=True, env={**os.environ, PW_ENV: PASSWORD}, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["adapters"][0]["name"] == "イーサネット" and doc["os"]["locale"] == "ja-JP"
    assert PASSWORD not in r.stdout


@pytest.mark.parametrize("transport,auth,lib", [("winrm", "kerberos", "kerberos"), ("winrm", "credssp", "requests_credssp"),
                                                ("psrp", "kerberos", "gssapi"), ("psrp", "credssp", "requests_credssp")])
def test_missing_optional_auth_library_is_a_config_error(wsman, transport, auth, lib, monkeypatch):
    """Kerberos/CredSSP libraries are extras; a controller without them gets a setup error, not 'unreachable'."""
    import importlib.util

    real = importlib.util.find_spec
    # the libraries are installed here (the suite tests them for real); hide one to see the message
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == lib else real(name, *a))
    run = wsman()
    with pytest.raises(ConfigError, match=rf"{auth} authentication needs the {lib} library.*guestprep\[{auth}\]"):
        open_connector(run.make_guest(transport, auth=auth), run.options())
    assert run.state.requests == []
