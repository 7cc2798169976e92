"""Fixtures for Windows tests: generated PKI, NTLM credential store, the WS-Man test server."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from guestprep.connectors import ConnectOptions
from guestprep.models import Credentials, Guest, OSFamily, Transport
from tests.windows.kdc import Kdc, missing_tools, start_kdc
from tests.windows.wsman_server.certs import Pki, make_pki
from tests.windows.wsman_server.guest import FakeWindowsGuest
from tests.windows.wsman_server.server import ServerConfig, WsmanTestServer

USER = "Administrator"
PASSWORD = "Pässwörd-1!§"   # non-ASCII on purpose (Latin-1: what HTTP Basic can carry)
PW_ENV = "GUESTPREP_TEST_WIN_PASSWORD"


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session", autouse=True)
def ntlm_user_file(tmp_path_factory):
    """pyspnego's NTLM acceptor reads accounts from NTLM_USER_FILE (DOMAIN:USER:PASSWORD)."""
    path = tmp_path_factory.mktemp("ntlm") / "users"
    path.write_text(f":{USER}:{PASSWORD}\nWIN-TEST:{USER}:{PASSWORD}\n", encoding="utf-8")
    old = os.environ.get("NTLM_USER_FILE")
    os.environ["NTLM_USER_FILE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("NTLM_USER_FILE", None)
    else:
        os.environ["NTLM_USER_FILE"] = old


@pytest.fixture
def password_env(monkeypatch):
    monkeypatch.setenv(PW_ENV, PASSWORD)
    return PW_ENV


@dataclass
class Running:
    server: WsmanTestServer
    guest: FakeWindowsGuest
    pki: Pki

    @property
    def state(self):
        return self.server.state

    def make_guest(self, transport: str = "winrm", scheme: str = "https", auth: str = "ntlm",
                   name: str = "win01", user: str = USER, password_env: str | None = PW_ENV, **vars: Any) -> Guest:
        port = self.server.https.port if scheme == "https" else self.server.http.port
        v: dict[str, Any] = {}
        if transport == "winrm":
            v.update(ansible_winrm_scheme=scheme, ansible_winrm_transport=auth, ansible_winrm_operation_timeout_sec=2,
                     ansible_winrm_read_timeout_sec=10)
        else:
            v.update(ansible_psrp_protocol=scheme, ansible_psrp_auth=auth, ansible_psrp_operation_timeout=2,
                     ansible_psrp_read_timeout=10)
        v.update(vars)
        return Guest(name=name, address="127.0.0.1", port=port, transport=Transport(transport), os=OSFamily.WINDOWS,
                     credentials=Credentials(user=user, password_env=password_env), vars=v, origin="test")

    def options(self, **kw: Any) -> ConnectOptions:
        kw.setdefault("ca_bundle", str(self.pki.ca_cert))
        return ConnectOptions(**kw)


@pytest.fixture
def wsman(pki, password_env) -> Callable[..., Running]:
    started: list[WsmanTestServer] = []

    def start(profile: str | dict = "ws2019-en-US", expired_cert: bool = False, **config: Any) -> Running:
        guest = FakeWindowsGuest(profile)
        cfg = ServerConfig(users={USER: PASSWORD}, **config)
        srv = WsmanTestServer(guest, cfg, pki=pki, expired=expired_cert).start()
        started.append(srv)
        return Running(srv, guest, pki)

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def kdc(tmp_path_factory) -> Kdc:
    """A real MIT KDC; the WS-Man test server accepts Kerberos for HTTP/127.0.0.1 from its keytab."""
    missing = missing_tools()
    if missing:
        pytest.fail(f"Kerberos tests need {', '.join(missing)}: install krb5-kdc and krb5-admin-server "
                    "(scripts/system-packages.txt; make test installs them as root)")
    k = start_kdc(tmp_path_factory.mktemp("kdc"))
    k.add_user(USER, PASSWORD)
    k.add_user("svc-migrate", "Svc-Pass-2")
    # a Windows computer account answers for HTTP/ (pywinrm) and host/ (pyspnego's default, AD's alias)
    k.add_service("HTTP/127.0.0.1")
    k.add_service("host/127.0.0.1")
    yield k
    k.stop()


@pytest.fixture
def kerberos_env(kdc, monkeypatch, tmp_path) -> Kdc:
    """Point this test's Kerberos clients and acceptor at the test KDC, with an empty ticket cache."""
    for key, value in kdc.environ(tmp_path / "ccache").items():
        monkeypatch.setenv(key, value)
    return kdc
