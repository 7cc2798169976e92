"""Pure helpers shared by the Windows connectors and the facts parser."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from guestprep.connectors import windows_common as wc
from guestprep.errors import CollectorError
from guestprep.facts import windows as wf
from tests.windows.wsman_server.guest import clixml_error, load_profile

pytestmark = pytest.mark.unit


@given(st.text())
def test_encoded_command_round_trips(text):
    assert wc.decode_command(wc.encode_command(text)) == text


@given(st.text(), st.lists(st.text()), st.one_of(st.none(), st.text()))
def test_payload_line_is_one_ascii_line_and_round_trips(script, args, stdin):
    line = wc.payload_line(script, args, stdin.encode("utf-8") if stdin is not None else None)
    assert line.endswith(b"\r\n") and line.count(b"\n") == 1 and line.isascii()
    assert wc.parse_payload_line(line) == {"script": script, "args": args, "stdin": stdin}


def test_bootstrap_has_no_input_in_it():
    argv = wc.bootstrap_argv()
    assert argv[:-1] == ["powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass",
                         "-EncodedCommand"]
    assert wc.decode_command(argv[-1]) == wc.BOOTSTRAP


def test_clixml_decoding():
    assert wc.decode_clixml(clixml_error("Zugriff verweigert\nZeile 2 <&>")) == "Zugriff verweigert\nZeile 2 <&>"
    assert wc.decode_clixml(b"plain text stays") == "plain text stays"
    warn = ('#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
            '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T></TN>'
            '<MS><I64 N="SourceId">1</I64></MS></Obj><S S="Warning">disk is slow_x000D__x000A_</S></Objs>')
    assert wc.decode_clixml(warn) == "WARNING: disk is slow"
    broken = "#< CLIXML\r\n<Objs><S S=\"Error\">unterminated"
    assert wc.decode_clixml(broken) == broken   # never lose the raw text


def test_script_marker():
    assert wc.script_marker("# guestprep-script: collect\nSet-StrictMode") == "collect"
    assert wc.script_marker("Write-Output 1") is None


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d["network"]["adapters"][0].__setitem__("mac", "zz"), "network.adapters[0].mac"),
    (lambda d: d["os"].__setitem__("build", "abc"), "os.build"),
    (lambda d: d["storage"]["disks"][0]["partitions"][0].__setitem__("offset", None), "storage.disks[0].partitions[0].offset"),
    (lambda d: d["firmware"].__setitem__("type", "coreboot"), "firmware.type"),
    (lambda d: d.__setitem__("supported", "yes"), "supported"),
    (lambda d: d["pending_reboot"].__setitem__("pending", "maybe"), "pending_reboot.pending"),
    (lambda d: d["storage"]["disks"][0].__setitem__("is_boot", "yes"), "storage.disks[0].is_boot"),
    (lambda d: d["network"]["routes"][0].pop("destination"), "network.routes[0].destination"),
    (lambda d: d["network"]["adapters"][0]["ipv4"][0].__setitem__("prefix", [24]), "network.adapters[0].ipv4[0].prefix"),
    (lambda d: d["volumes"][0].__setitem__("free", None), "volumes[0].free"),
    (lambda d: d.__setitem__("driver_store", [{"original_name": "vioscsi.inf", "class": {}}]), "driver_store[0].class"),
    (lambda d: d["services"].__setitem__("vioscsi", {"start": "boot"}), "services.vioscsi.start"),
    (lambda d: d.__setitem__("bitlocker", [{"protection_status": "On"}]), "bitlocker[0].mount"),
    (lambda d: d["efi"].__setitem__("files", [{"size": 1}]), "efi"),   # the UEFI member, parsed with the rest
])
def test_parse_names_the_bad_field(mutate, where):
    doc = load_profile("ws2019-en-US")
    mutate(doc)
    with pytest.raises(CollectorError) as ei:
        wf.parse(doc, where="g1")
    assert where in str(ei.value) and str(ei.value).startswith("g1:")


def test_powershell_3_single_element_arrays_are_accepted():
    doc = load_profile("ws2016-de-DE")
    doc["network"]["adapters"] = doc["network"]["adapters"][0]     # ConvertTo-Json unwraps one-element arrays
    doc["volumes"] = doc["volumes"][0]
    f = wf.parse(doc)
    assert len(f.adapters) == 1 and f.volume("C:").free > 0


def test_parse_output_rejects_non_utf8():
    with pytest.raises(CollectorError, match="not UTF-8"):
        wf.parse_output("{\"a\": \"ä\"}".encode("cp1252"), "g")


def test_summarize_is_json_and_small():
    s = wf.summarize(wf.parse(load_profile("ws2022-ja-JP")))
    assert json.loads(json.dumps(s, ensure_ascii=False))["locale"] == "ja-JP" and len(s) < 25


# ------------------------------------------------------------------ numeric guest vars (issue 12, item 6)

@pytest.mark.parametrize("transport,key,value", [
    ("winrm", "ansible_port", "59 86"), ("winrm", "ansible_winrm_operation_timeout_sec", "20s"),
    ("winrm", "ansible_winrm_read_timeout_sec", "1.5"), ("winrm", "guestprep_winrm_retries", "many"),
    ("winrm", "ansible_port", "70000"), ("psrp", "ansible_port", "https"),
    ("psrp", "ansible_psrp_operation_timeout", "twenty"), ("psrp", "ansible_psrp_read_timeout", True),
    ("psrp", "ansible_psrp_connection_timeout", "-3"),
])
def test_bad_numeric_guest_var_is_a_config_error_naming_guest_and_var(transport, key, value):
    """Before: int() raised ValueError (a traceback) on a value from vSphere discovery or an inventory."""
    from guestprep.connectors import ConnectOptions
    from guestprep.connectors.psrp import PSRPSettings
    from guestprep.connectors.winrm import WinRMSettings
    from guestprep.errors import ConfigError
    from guestprep.models import Credentials, Guest, OSFamily, Transport

    g = Guest(name="web01", address="10.0.0.5", os=OSFamily.WINDOWS, transport=Transport(transport),
              credentials=Credentials(user="Administrator"), vars={key: value}, origin="vsphere:dc1/web01")
    settings = WinRMSettings if transport == "winrm" else PSRPSettings
    with pytest.raises(ConfigError) as err:
        settings.from_guest(g, ConnectOptions())
    assert key in err.value.message and "web01" in str(err.value.where)


def test_good_numeric_guest_vars_as_text_are_accepted():
    from guestprep.connectors import ConnectOptions
    from guestprep.connectors.winrm import WinRMSettings
    from guestprep.models import Credentials, Guest, OSFamily, Transport

    g = Guest(name="web01", address="10.0.0.5", os=OSFamily.WINDOWS, transport=Transport.WINRM,
              credentials=Credentials(user="Administrator"),
              vars={"ansible_port": " 5986", "ansible_winrm_operation_timeout_sec": "30"})
    s = WinRMSettings.from_guest(g, ConnectOptions())
    assert s.endpoint.endswith(":5986/wsman") and s.operation_timeout == 30 and s.read_timeout == 40


def test_psrp_no_longer_borrows_winrm_private_helpers():
    """issue 14: the shared helpers are public in windows_common; psrp imports nothing from winrm."""
    import inspect

    from guestprep.connectors import psrp

    src = inspect.getsource(psrp)
    assert "connectors.winrm" not in src and "import winrm" not in src
    for name in ("url_host", "tls_policy", "ssl_reason", "short_error", "guest_password", "check_basic_password",
                 "int_var"):
        assert callable(getattr(wc, name))
