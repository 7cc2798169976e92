"""finalize picks the ostype the way VM-OSTYPE judges it (issue 18): the guestId, or, when that is
empty or generic (otherGuest...), the OS VMware Tools reports."""

from __future__ import annotations

import pytest

from guestprep.checks.registry import get
from guestprep.finalize.config_builder import build_config
from tests.finalize.shapes import handoff_for

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("guest_id,tools,ostype", [
    ("", "Red Hat Enterprise Linux 9 (64-bit)", "l26"),
    ("otherGuest64", "Microsoft Windows Server 2022 (64-bit)", "win11"),
    ("otherGuest64", "Microsoft Windows Server 2016 (64-bit)", "win10"),
    ("rhel8_64Guest", "Microsoft Windows Server 2022 (64-bit)", "l26"),  # a specific guestId wins
    ("otherGuest", "", "other"),                                         # nothing known: Proxmox's other
])
def test_finalize_ostype_follows_vm_ostype(guest_id, tools, ostype, full_schema):
    h = handoff_for("linux-bios-lsi")
    h.vm.guest_id, h.vm.tools_guest_full_name = guest_id, tools
    b = build_config(h, 4242, strategy="direct")
    assert b.params["ostype"] == ostype
    (finding,) = get("VM-OSTYPE").evaluate(h.vm, h.vm.name)
    assert (finding.status.value == "pass") == (ostype != "other")
    assert full_schema.errors("POST", "/nodes/{node}/qemu", b.params, {"node": b.node}) == {}
