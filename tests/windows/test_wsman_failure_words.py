"""Issue 16 item 6 on the WS-Management test server: failures in words, the library's text kept as detail."""

from __future__ import annotations

import pytest

from guestprep.connectors import open_connector
from guestprep.errors import ConnectionFailed
from tests.windows.conftest import PASSWORD, PW_ENV

BOTH = ["winrm", "psrp"]


@pytest.mark.parametrize("transport", BOTH)
def test_wrong_password_says_the_server_refused_the_user(wsman, transport, monkeypatch):
    run = wsman()
    monkeypatch.setenv(PW_ENV, "wrong-" + PASSWORD)
    with pytest.raises(ConnectionFailed) as ei:
        open_connector(run.make_guest(transport), run.options())
    msg = ei.value.message
    assert "authentication failed: the server refused user 'Administrator'" in msg, msg
    assert "wrong-" not in str(ei.value)


@pytest.mark.parametrize("transport", BOTH)
def test_untrusted_certificate_names_the_reason_and_keeps_the_chain(wsman, transport):
    run = wsman()
    with pytest.raises(ConnectionFailed) as ei:
        open_connector(run.make_guest(transport), run.options(ca_bundle=str(run.pki.other_ca_cert)))
    msg = ei.value.message
    assert msg.startswith("TLS certificate verification failed: "), msg
    assert "Max retries" not in msg and "HTTPSConnectionPool" not in msg and not msg.endswith("...")
    assert "certificate verify failed" in ei.value.detail  # the whole urllib3 chain, as evidence
