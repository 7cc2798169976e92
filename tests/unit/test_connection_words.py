"""Issue 16 item 6: a connection failure says what happened in words; the library's chain is evidence."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from guestprep.connectors import ConnectOptions, open_connector
from guestprep.errors import ConnectionFailed, GuestprepError
from guestprep.models import Credentials, Guest, OSFamily, Transport


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def windows_guest(transport: Transport, port: int) -> Guest:
    scheme = {"ansible_winrm_scheme": "http", "ansible_psrp_protocol": "http",
              "ansible_winrm_transport": "ntlm", "ansible_psrp_auth": "ntlm",
              "ansible_winrm_message_encryption": "auto", "ansible_psrp_message_encryption": "auto",
              "guestprep_winrm_retries": 0}
    return Guest(name="win", address="127.0.0.1", port=port, transport=transport, os=OSFamily.WINDOWS,
                 credentials=Credentials(user="Administrator", password_env="GP_WORDS_PW"), vars=scheme)


@pytest.mark.parametrize("transport", [Transport.WINRM, Transport.PSRP])
def test_refused_windows_port_says_refused(transport, monkeypatch):
    monkeypatch.setenv("GP_WORDS_PW", "pw")
    port = closed_port()
    with pytest.raises(GuestprepError) as exc:
        with open_connector(windows_guest(transport, port), ConnectOptions(connect_timeout=3, command_timeout=3)) as c:
            c.run(["hostname"], timeout=3)
    msg = exc.value.message
    assert f"connection refused: nothing listens on 127.0.0.1:{port}" in msg, msg
    assert "Max retries" not in msg and "HTTPConnection" not in msg and not msg.endswith("...")
    assert "Max retries" in exc.value.detail or "refused" in exc.value.detail.lower()


def test_short_error_never_cuts_and_reads_a_urllib3_chain():
    import requests
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    from guestprep.connectors import windows_common as wc

    inner = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    inner.__cause__ = ConnectionRefusedError(111, "Connection refused")
    exc = requests.exceptions.ConnectionError(MaxRetryError(None, "/wsman", reason=inner))
    assert wc.short_error(exc, "10.0.0.5", 5986) == \
        "connection refused: nothing listens on 10.0.0.5:5986 (or a firewall rejects it)"
    long = ValueError("x" * 500)
    assert wc.short_error(long) == "x" * 500


def test_blackhole_ssh_times_out_in_words():
    """A listening socket that never answers: 'timed out after N s', within a few seconds."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    held = []
    threading.Thread(target=lambda: held.append(srv.accept()), daemon=True).start()
    g = Guest(name="hole", address="127.0.0.1", port=srv.getsockname()[1], credentials=Credentials(user="root"))
    start = time.monotonic()
    with pytest.raises(ConnectionFailed, match=r"timed out after 2 s") as exc:
        open_connector(g, ConnectOptions(connect_timeout=2))
    assert time.monotonic() - start < 15
    srv.close()
