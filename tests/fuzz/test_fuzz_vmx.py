"""Fuzz the .vmx parser: a ConfigError (naming the file) or a SourceVM, never another exception."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guestprep.errors import GuestprepError
from guestprep.models import SourceVM
from guestprep.vmx import decode_vmx, parse_vmx
from tests.fuzz import FUZZ

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]

KEYS = ["displayName", "memSize", "numvcpus", "cpuid.coresPerSocket", "firmware", "guestOS", "uuid.bios",
        "scsi0.present", "scsi0.virtualDev", "scsi0:0.present", "scsi0:0.fileName", "scsi0:0.mode",
        "sata0.present", "sata0:1.present", "sata0:1.deviceType", "nvme0.present", "nvme0:0.present",
        "nvme0:0.fileName", "ide0:0.present", "ide0:0.fileName", "ethernet0.present", "ethernet0.addressType",
        "ethernet0.generatedAddress", "ethernet0.address", "ethernet0.virtualDev", "bios.hddOrder", ".encoding",
        "vtpm.present", "uefi.secureBoot.enabled", "pciPassthru0.present"]
VALUES = st.one_of(st.sampled_from(["TRUE", "FALSE", "pvscsi", "lsisas1068", "efi", "bios", "4096", "0", "-1",
                                    "99999999999", "web.vmdk", "../../etc/passwd", "/dev/sda", "00:50:56:aa:bb:cc",
                                    "static", "generated", "cdrom-image", "disk.iso", "scsi0:0", "|22", "|7C", "|0A",
                                    "56 4d 96 af e6 46 bd 86-5c 4d 65 4e 77 36 ef 31", "windows-1252"]),
                   st.text(max_size=20))
LINE = st.one_of(
    st.builds(lambda k, v: f'{k} = "{v}"', st.sampled_from(KEYS), VALUES),
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(KEYS), VALUES),
    st.builds(lambda k, v: f'{k} = "{v}', st.sampled_from(KEYS), VALUES),            # no closing quote
    st.builds(lambda a, b: f'{a} = "1" {b} = "2"', st.sampled_from(KEYS), st.sampled_from(KEYS)),
    st.text(max_size=40),
)


def _check(call) -> None:
    start = time.monotonic()
    try:
        vm = call()
        assert isinstance(vm, SourceVM) and vm.name
    except GuestprepError as e:
        assert str(e)                       # a message for the operator, never empty
    assert time.monotonic() - start < 5.0


@FUZZ
@given(st.lists(LINE, max_size=25))
def test_vmx_text_parses_or_is_a_clean_error(lines):
    _check(lambda: parse_vmx("\n".join(lines) + "\n", where="fuzz.vmx"))


@FUZZ
@given(st.binary(max_size=400), st.booleans())
def test_vmx_bytes_decode_or_are_a_clean_error(data, bom):
    raw = (b"\xef\xbb\xbf" if bom else b"") + data

    def run():
        return parse_vmx(decode_vmx(raw, "fuzz.vmx"), where="fuzz.vmx")
    _check(run)
