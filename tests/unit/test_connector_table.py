"""One table from transport to connector: every transport has a connector, and what `os: auto` means over it."""

from __future__ import annotations

import pytest

from guestprep import connectors
from guestprep.facts import os_of
from guestprep.models import Guest, OSFamily, Transport

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("transport", list(Transport))
def test_every_transport_has_a_connector_class(transport):
    cls = connectors.connector_class(transport)
    assert cls.__module__ == f"guestprep.connectors.{transport.value}"
    assert callable(getattr(cls, "run")) and callable(getattr(cls, "close"))


@pytest.mark.parametrize("transport,os", [(Transport.LOCAL, "linux"), (Transport.SSH, "linux"),
                                          (Transport.WINRM, "windows"), (Transport.PSRP, "windows")])
def test_auto_os_is_decided_by_the_transport_in_one_place(transport, os):
    assert os_of(Guest(name="g", address="h", transport=transport)) == os
    assert os_of(Guest(name="g", address="h", transport=transport, os=OSFamily.LINUX)) == "linux"


def test_unknown_transport_is_refused():
    with pytest.raises(ValueError, match="unknown transport"):
        connectors.connector_class("telnet")  # type: ignore[arg-type]
