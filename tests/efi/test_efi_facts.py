"""The Linux collector's efi member -> EfiFacts (efibootmgr shapes, real lab output, bad input)."""

from __future__ import annotations

import pytest

from guestprep.errors import CollectorError
from guestprep.facts.efi import parse_efibootmgr, parse_linux_efi

pytestmark = pytest.mark.unit

# efibootmgr -v inside the UEFI lab guest (OVMF, q35, SATA) after its first VMware-shaped boot
LAB_OUTPUT = (
    "BootCurrent: 0008\nTimeout: 0 seconds\nBootOrder: 0008,0000,0001,0007\n"
    "Boot0000* UiApp\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21-7614-4503-836e-8ab6f4662331)\n"
    "Boot0001* UEFI QEMU HARDDISK QM00013 \tPciRoot(0x0)/Pci(0x2,0x0)/Sata(0,65535,0)N.....YM....R,Y.\n"
    "Boot0007* EFI Internal Shell\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(7c04a583-9e3e-4f1c-ad65-e05268d0b4d1)\n"
    "Boot0008* debian\tHD(2,GPT,f1d6baa6-a08c-934e-a0c5-84341a97fde6,0x600000,0x20000)/File(\\EFI\\debian\\grubx64.efi)\n"
)


def test_efibootmgr_lab_output():
    entries, current, order = parse_efibootmgr(LAB_OUTPUT)
    assert current == "0008" and order == ["0008", "0000", "0001", "0007"]
    deb = next(e for e in entries if e.id == "0008")
    assert deb.label == "debian" and deb.path == "\\EFI\\debian\\grubx64.efi" and deb.active
    assert next(e for e in entries if e.id == "0001").path is None


def test_old_efibootmgr_without_tabs_and_inactive_entries():
    text = ("BootCurrent: 0002\nBootOrder: 0002\n"
            "Boot0002* Red Hat Enterprise Linux HD(1,GPT,1111,0x800,0x12c000)/File(\\EFI\\redhat\\shimx64.efi)\n"
            "Boot0003  opensuse HD(1,GPT,2222,0x800,0x12c000)/\\EFI\\opensuse\\shim.efi\n")
    entries, _, _ = parse_efibootmgr(text)
    assert [(e.label, e.path, e.active) for e in entries] == [
        ("Red Hat Enterprise Linux", "\\EFI\\redhat\\shimx64.efi", True),
        ("opensuse", "\\EFI\\opensuse\\shim.efi", False)]


def test_active_loader_follows_boot_current_and_files():
    efi = parse_linux_efi({"firmware": "uefi", "secure_boot": "0", "esp_mount": "/boot/efi", "esp_device": "/dev/sda2",
                           "files": "696320\t" + "a" * 64 + "\tEFI/debian/grubx64.efi",
                           "df": {"rc": 0, "out": "Filesystem 1024-blocks Used Available Capacity Mounted on\n"
                                                  "/dev/sda2 65390 681 64709 2% /boot/efi"},
                           "efibootmgr": {"rc": 0, "out": LAB_OUTPUT}})
    assert efi.active_loader() == "\\EFI\\debian\\grubx64.efi"
    assert efi.fallback is None and efi.esp_free_bytes == 64709 * 1024 and efi.secure_boot is False


@pytest.mark.parametrize("raw,needle", [
    ("x", "expected an object"),
    ({"firmware": "legacy"}, "firmware"),
    ({"firmware": "uefi", "esp_mount": "/boot/efi", "files": "12\tnot-a-hash\tEFI/x.efi"}, "not a sha256"),
    ({"firmware": "uefi", "esp_mount": "/boot/efi", "files": "only one field"}, "SIZE<TAB>SHA256<TAB>PATH"),
    ({"firmware": "uefi", "esp_mount": "/boot/efi", "files": ["a"]}, "expected lines of text"),
    ({"firmware": "uefi", "efibootmgr": "text"}, "not a command record"),
])
def test_garbage_is_refused_naming_the_field(raw, needle):
    with pytest.raises(CollectorError, match="efi") as exc:
        parse_linux_efi(raw)
    assert needle in str(exc.value)


def test_unreadable_nvram_and_unmounted_esp_are_unknown_not_fine():
    efi = parse_linux_efi({"firmware": "uefi", "secure_boot": "", "esp_mount": "", "files": None,
                           "efibootmgr": {"rc": 2, "out": "", "err": "EFI variables are not supported on this system."}})
    assert efi.files is None and efi.entries is None and efi.secure_boot is None
    assert set(efi.unknown) == {"esp", "entries", "secure_boot"}


from hypothesis import given, settings, strategies as st  # noqa: E402

_values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=40),
                    st.lists(st.text(max_size=10), max_size=3),
                    st.dictionaries(st.sampled_from(["rc", "out", "err"]),
                                    st.one_of(st.integers(-1, 3), st.text(max_size=200)), max_size=3))
_docs = st.fixed_dictionaries({}, optional={k: _values for k in (
    "firmware", "secure_boot", "esp_mount", "esp_device", "files", "df", "efibootmgr", "grub_install")})


@settings(max_examples=300, deadline=None)
@given(_docs, st.sampled_from(["uefi", "bios"]))
def test_any_document_parses_or_is_refused_with_a_collector_error(doc, fw):
    """Garbage never escapes as a traceback: it parses into facts or raises CollectorError."""
    doc = {**doc, "firmware": doc.get("firmware", fw)}
    try:
        efi = parse_linux_efi(doc)
    except CollectorError:
        return
    efi.active_loader()
    efi.fallback


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"firmware": st.just("uefi"), "esp_mount": st.just("/boot/efi"),
                              "files": st.text(max_size=80)}, optional={"df": _values, "efibootmgr": _values}))
def test_mounted_esp_with_any_listing_and_commands(doc):
    try:
        parse_linux_efi(doc)
    except CollectorError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"firmware": st.sampled_from(["uefi", "bios"])}, optional={
    k: _values for k in ("secure_boot", "esp", "files", "bcdedit", "unknown")}))
def test_any_windows_member_parses_or_is_refused(doc):
    from guestprep.facts.efi import parse_windows_efi

    try:
        efi = parse_windows_efi(doc)
    except CollectorError:
        return
    efi.active_loader()
