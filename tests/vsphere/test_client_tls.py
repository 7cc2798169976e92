"""Connecting: TLS verified by default (CA bundle or SHA-256 pinning), clear errors otherwise."""

from __future__ import annotations

import socket

import pytest

from guestprep.errors import ConfigError, ConnectionFailed
from guestprep.vsphere.client import connect, normalize_thumbprint, parse_server

pytestmark = pytest.mark.integration


def test_ca_bundle_verifies_and_logs_in(vcsim):
    s = vcsim.connect()
    try:
        assert s.content.about.apiType == "VirtualCenter"
        assert s.cookie().startswith("vmware_soap_session=")
    finally:
        s.close()


def test_thumbprint_pinning_accepts_colon_uppercase_form(vcsim):
    t = vcsim.certs.thumbprint_sha256.upper()
    pinned = ":".join(t[i:i + 2] for i in range(0, 64, 2))
    s = connect(vcsim.server, vcsim.user, vcsim.password, thumbprint=pinned)
    s.close()


def test_untrusted_certificate_is_refused_by_default(vcsim):
    with pytest.raises(ConnectionFailed, match="not trusted"):
        connect(vcsim.server, vcsim.user, vcsim.password)


def test_unrelated_ca_is_refused(vcsim):
    with pytest.raises(ConnectionFailed, match="not trusted"):
        connect(vcsim.server, vcsim.user, vcsim.password, ca_bundle=str(vcsim.certs.other_ca_pem))


def test_wrong_thumbprint_is_refused(vcsim):
    with pytest.raises(ConnectionFailed, match="thumbprint mismatch"):
        connect(vcsim.server, vcsim.user, vcsim.password, thumbprint="ab" * 32)


def test_insecure_only_when_asked(vcsim):
    s = connect(vcsim.server, vcsim.user, vcsim.password, insecure=True)
    s.close()
    with pytest.raises(ConfigError, match="cannot be combined"):
        connect(vcsim.server, vcsim.user, vcsim.password, insecure=True, ca_bundle=str(vcsim.certs.ca_pem))


def test_wrong_password_is_a_clear_error_without_the_password(vcsim):
    with pytest.raises(ConnectionFailed) as exc:
        connect(vcsim.server, vcsim.user, "not-the-password", ca_bundle=str(vcsim.certs.ca_pem))
    assert "login refused" in str(exc.value) and "not-the-password" not in str(exc.value)


def test_nothing_listening_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionFailed, match="refused"):
        connect(f"127.0.0.1:{port}", "u", "p", timeout=5)


def test_bad_inputs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="64 hex"):
        normalize_thumbprint("12:34")
    with pytest.raises(ConfigError, match="not found"):
        connect("127.0.0.1:1", "u", "p", ca_bundle=str(tmp_path / "missing.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match="PEM"):
        connect("127.0.0.1:1", "u", "p", ca_bundle=str(garbage))
    with pytest.raises(ConfigError):
        parse_server("https://vc/sdk")
    assert parse_server("vc.example:8443") == ("vc.example", 8443)
    assert parse_server("[::1]:443") == ("::1", 443)
