"""Kerberos (real MIT KDC) and CredSSP (pyspnego acceptor) over both transports.

The WS-Man test server accepts the real client libraries' tokens: Kerberos AP-REQs
checked against the KDC-issued keytab, CredSSP's TLS + NTLM + public-key binding +
delegated credentials. Over HTTP every body must travel sealed (MS-WSMV encryption).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from guestprep.connectors import open_connector
from guestprep.errors import ConfigError, ConnectionFailed
from guestprep.facts import windows as wf
from tests.windows.conftest import PASSWORD, PW_ENV, USER
from tests.windows.kdc import REALM

SPNEGO = "application/HTTP-SPNEGO-session-encrypted"
KRB_ENC = "application/HTTP-Kerberos-session-encrypted"
CREDSSP = "application/HTTP-CredSSP-session-encrypted"

KERBEROS = [("winrm", "https"), ("winrm", "http"), ("psrp", "https"), ("psrp", "http")]


def _collect(run, guest):
    conn = open_connector(guest, run.options())
    try:
        return wf.collect(conn, timeout=60)
    finally:
        conn.close()


@pytest.mark.parametrize("transport,scheme", KERBEROS, ids=["-".join(k) for k in KERBEROS])
def test_kerberos_with_password_from_env(wsman, kerberos_env, transport, scheme):
    run = wsman("ws2022-ja-JP", auth=("kerberos", "negotiate"))
    guest = run.make_guest(transport, scheme, "kerberos", user=f"{USER}@{REALM}")
    facts = _collect(run, guest)
    assert facts.os.locale == "ja-JP"
    assert set(run.state.auth_protocols) == {"kerberos"}, run.state.auth_protocols
    assert run.state.client_principals[-1] == f"{USER}@{REALM}"
    if scheme == "http":   # sealed with the Kerberos session key, never clear text
        assert run.state.encrypted_bodies > 0
        assert run.state.encryption_protocols <= {SPNEGO, KRB_ENC}
    # the password never reaches a file: only tickets are cached, in the private 0700 collection
    cc = os.environ["KRB5CCNAME"]
    if cc.startswith("DIR:"):
        path = cc[4:]
        assert oct(os.stat(path).st_mode & 0o777) == "0o700"
        for name in os.listdir(path):
            with open(os.path.join(path, name), "rb") as fh:
                assert PASSWORD.encode() not in fh.read()


@pytest.mark.parametrize("transport", ["winrm", "psrp"])
def test_kerberos_uses_an_existing_ticket_without_password(wsman, kerberos_env, transport, monkeypatch):
    import gssapi
    import gssapi.raw as graw

    principal = f"svc-migrate@{REALM}"
    # what `kinit svc-migrate` leaves behind: a TGT in the default cache
    acquired = graw.acquire_cred_with_password(gssapi.Name(principal, gssapi.NameType.user), b"Svc-Pass-2",
                                               usage="initiate")
    graw.store_cred_into({"ccache": os.environ["KRB5CCNAME"]}, acquired.creds, usage="initiate", overwrite=True)
    run = wsman(auth=("kerberos", "negotiate"))
    guest = run.make_guest(transport, "https", "kerberos", user=principal, password_env=None)
    facts = _collect(run, guest)
    assert facts.hostname
    assert run.state.client_principals[-1] == principal


@pytest.mark.parametrize("transport", ["winrm", "psrp"])
def test_kerberos_without_ticket_or_password_is_a_clear_config_error(wsman, kerberos_env, transport):
    run = wsman(auth=("kerberos", "negotiate"))
    guest = run.make_guest(transport, "https", "kerberos", user=f"nobody@{REALM}", password_env=None)
    with pytest.raises((ConfigError, ConnectionFailed)) as err:
        open_connector(guest, run.options())
    assert "nobody@" in str(err.value) or "ticket" in str(err.value) or "credentials" in str(err.value)
    assert run.state.client_principals == []


def test_kerberos_wrong_password_names_the_cause_without_the_secret(wsman, kerberos_env, monkeypatch):
    monkeypatch.setenv(PW_ENV, "not-the-password")
    run = wsman(auth=("kerberos",))
    guest = run.make_guest("winrm", "https", "kerberos", user=f"{USER}@{REALM}")
    with pytest.raises(ConnectionFailed, match="wrong password") as err:
        open_connector(guest, run.options())
    assert "not-the-password" not in str(err.value)
    assert run.state.requests == []   # refused by the KDC before any request reached the guest


def test_kerberos_unknown_service_principal_is_explained(wsman, kerberos_env):
    run = wsman(auth=("kerberos",))
    guest = run.make_guest("winrm", "https", "kerberos", user=f"{USER}@{REALM}",
                           ansible_winrm_kerberos_hostname_override="win99.example")
    with pytest.raises(ConnectionFailed, match="service principal"):
        open_connector(guest, run.options())


def test_ntlm_domain_syntax_is_refused_for_kerberos(wsman, kerberos_env):
    run = wsman(auth=("kerberos",))
    guest = run.make_guest("winrm", "https", "kerberos", user="CORP\\Administrator")
    with pytest.raises(ConfigError, match="user@REALM"):
        open_connector(guest, run.options())


CREDSSP_MATRIX = [("winrm", "https"), ("winrm", "http"), ("psrp", "https"), ("psrp", "http")]


@pytest.mark.parametrize("transport,scheme", CREDSSP_MATRIX, ids=["-".join(k) for k in CREDSSP_MATRIX])
def test_credssp_delegates_credentials_and_seals_http(wsman, transport, scheme):
    run = wsman("ws2019-en-US", auth=("credssp",))
    facts = _collect(run, run.make_guest(transport, scheme, "credssp"))
    assert facts.hostname
    assert set(run.state.auth_protocols) == {"credssp"}
    # the point of CredSSP: the guest holds the user's credentials for the second hop (UNC media)
    assert run.state.delegated and run.state.delegated[-1].endswith(USER)
    if scheme == "http":
        assert run.state.encryption_protocols == {CREDSSP}
        assert run.state.encrypted_bodies > 0


def test_credssp_large_payload_is_chunked_both_ways(wsman, tmp_path):
    """CredSSP seals 16 KiB at a time (multipart/x-multi-encrypted); a file upload crosses that."""
    run = wsman(auth=("credssp",))
    conn = open_connector(run.make_guest("winrm", "http", "credssp"), run.options())
    try:
        src = tmp_path / "blob.bin"
        src.write_bytes(os.urandom(200_000))
        conn.put(str(src), "C:\\guestprep\\blob.bin")
        back = tmp_path / "back.bin"
        conn.get("C:\\guestprep\\blob.bin", str(back))
        assert back.read_bytes() == src.read_bytes()
    finally:
        conn.close()


@pytest.mark.parametrize("transport", ["winrm", "psrp"])
def test_credssp_wrong_password_is_a_clear_failure(wsman, transport, monkeypatch):
    monkeypatch.setenv(PW_ENV, "Wrong-Pass-9")
    run = wsman(auth=("credssp",))
    with pytest.raises(ConnectionFailed) as err:
        open_connector(run.make_guest(transport, "https", "credssp"), run.options())
    assert "Wrong-Pass-9" not in str(err.value)
    assert run.state.delegated == []


def test_preflight_cli_over_kerberos_and_credssp(wsman, kerberos_env, tmp_path):
    """The inventory picks the auth per guest; one report covers both."""
    import subprocess
    import sys

    krb = wsman("ws2016-de-DE", auth=("kerberos", "negotiate"))
    cssp = wsman("win11-en-US", auth=("credssp",))
    import yaml

    inv = tmp_path / "fleet.yaml"
    inv.write_text(yaml.safe_dump({"guests": [
        {"name": "krb01", "address": "127.0.0.1", "port": krb.server.https.port, "os": "windows",
         "transport": "winrm", "user": f"{USER}@{REALM}", "password_env": PW_ENV,
         "vars": {"ansible_winrm_transport": "kerberos", "ansible_winrm_ca_trust_path": str(krb.pki.ca_cert)}},
        {"name": "cssp01", "address": "127.0.0.1", "port": cssp.server.http.port, "os": "windows",
         "transport": "psrp", "user": USER, "password_env": PW_ENV,
         "vars": {"ansible_psrp_protocol": "http", "ansible_psrp_auth": "credssp"}},
    ]}, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "reports"
    guestprep = str(Path(sys.executable).with_name("guestprep"))
    r = subprocess.run([guestprep, "preflight", "-i", str(inv), "-f", "json", "-o", str(out)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, PW_ENV: PASSWORD})
    assert r.returncode in (0, 1), r.stdout + r.stderr   # blockers may be found; no guest unreachable
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    text = json.dumps(report)
    assert PASSWORD not in text and PASSWORD not in r.stdout + r.stderr
    guests = {g["guest"]: g for g in report["guests"]}
    assert set(guests) == {"krb01", "cssp01"}
    for g in guests.values():
        reach = [f for f in g["findings"] if f["check_id"] == "WIN-REACHABLE"]
        assert reach and reach[0]["status"] == "pass", g
    assert "kerberos" in krb.state.auth_protocols and cssp.state.delegated
