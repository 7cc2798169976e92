"""A fake Windows guest: answers guestprep's scripts and changes its state like Windows would.

It identifies a script by its ``# guestprep-script: NAME`` marker and simulates the
effect the real script has on a real guest (registry values, driver store, scheduled
tasks, the journal in C:\\ProgramData\\guestprep), so that a re-collect after
``apply`` shows the fix and ``rollback`` restores what the journal recorded. The
simulation is our reading of what the scripts do on Windows; it is not Windows.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guestprep.connectors.windows_common import decode_command, parse_payload_line, script_marker
from tests.windows.wsman_server import powershell_model

GUESTS_DIR = Path(__file__).resolve().parents[1] / "guests"
JOURNAL = "C:\\ProgramData\\guestprep\\journal.json"

SERVICES_KEY = "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\"
HIBERBOOT = ("HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Power", "HiberbootEnabled")
HIBERNATE = ("HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Power", "HibernateEnabled")
SANPOLICY = ("HKLM:\\SYSTEM\\CurrentControlSet\\Services\\partmgr\\Parameters", "SanPolicy")
SAN_CODES = {1: "OnlineAll", 2: "OfflineShared", 3: "OfflineAll", 4: "OfflineInternal"}


@dataclass
class ScriptResult:
    stdout: bytes
    stderr: bytes = b""
    rc: int = 0
    drop: bool = False


def clixml_error(message: str) -> bytes:
    """How powershell.exe writes an error record to stderr over WinRS."""
    parts = []
    for line in message.replace("\r\n", "\n").split("\n"):
        esc = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        parts.append(f'<S S="Error">{esc}_x000D__x000A_</S>')
    return ('#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
            + "".join(parts) + "</Objs>").encode("utf-8")


def load_profile(name: str) -> dict[str, Any]:
    return json.loads((GUESTS_DIR / f"{name}.json").read_text(encoding="utf-8"))


class FakeWindowsGuest:
    def __init__(self, profile: str | dict[str, Any]):
        self.facts = copy.deepcopy(load_profile(profile) if isinstance(profile, str) else profile)
        self.files: dict[str, bytes] = {}
        self.journal: list[dict[str, Any]] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        self.ran: list[str] = []          # markers, in order
        self.lock = threading.RLock()
        self.collect_override: bytes | None = None   # garbage/truncated output tests
        self.hang_markers: set[str] = {"test-hang"}
        self.reachable_paths: dict[str, bytes] = {}   # UNC/HTTPS media the guest can read

    # ---------------------------------------------------------------- entry
    def run_script(self, text: str, args: list[str], stdin: str | None) -> ScriptResult | None:
        marker = script_marker(text)
        with self.lock:
            self.ran.append(marker or "<unmarked>")
            if marker in self.hang_markers:
                return None
            if marker is None:
                return ScriptResult(b"", clixml_error("fake guest: unmarked script refused"), 1)
            handler = getattr(self, "do_" + marker.replace("-", "_"), None)
            if handler is None:
                return ScriptResult(b"", clixml_error(f"fake guest: no handler for script {marker}"), 1)
            params = json.loads(args[0]) if args else {}
            self._stdin = stdin
            # How Windows PowerShell itself would fail on this script text before or while the
            # modelled commands run (5.1 native stderr under Stop, remote OutputEncoding, ...).
            fault = powershell_model.script_fault(text, self)
            if fault is not None:
                return ScriptResult(b"", clixml_error(fault), 1)
            try:
                out = handler(params)
            except GuestError as exc:
                return ScriptResult(b"", clixml_error(str(exc)), 1)
            if isinstance(out, ScriptResult):
                return out
            return ScriptResult((json.dumps(out, ensure_ascii=False) + "\r\n").encode("utf-8"))

    # ---------------------------------------------------------------- collect
    def do_collect(self, params: dict[str, Any]) -> ScriptResult:
        if self.collect_override is not None:
            return ScriptResult(self.collect_override)
        doc = copy.deepcopy(self.facts)
        doc["efi"] = self._efi_member(doc)
        escrow = ((doc.get("guestprep") or {}).get("bitlocker_escrow") or {})
        for v in doc.get("bitlocker") or []:
            if escrow.get(v["mount"]):
                v["recovery_key_escrowed"] = True
        return ScriptResult((json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\r\n").encode("utf-8"))

    @staticmethod
    def _efi_member(doc: dict[str, Any]) -> dict[str, Any] | None:
        """collect.ps1 prints "efi" for UEFI guests only; a guest whose profile has no ESP gets
        what Get-EfiFacts prints when Get-Partition finds none."""
        if (doc.get("firmware") or {}).get("type") != "uefi":
            return None
        if doc.get("efi") is not None:
            return doc["efi"]
        return {"firmware": "uefi", "secure_boot": doc["firmware"].get("secure_boot"), "esp": None, "files": None,
                "bcdedit": {"rc": 0, "out": "", "err": ""}, "unknown": {"esp": "no EFI system partition found"}}

    def do_install_efi_fallback(self, p: dict[str, Any]) -> dict[str, Any]:
        efi = self.facts.get("efi")
        if efi is None:
            raise GuestError("no EFI system partition found")
        files = {f["path"]: f for f in efi["files"]}
        src = files["\\EFI\\Microsoft\\Boot\\bootmgfw.efi"]
        if src["sha256"] != p["source_sha256"]:
            raise GuestError("EFI\\Microsoft\\Boot\\bootmgfw.efi changed since the plan")
        target = "\\EFI\\Boot\\bootx64.efi"
        old = files.get(target)
        kind = "file_replace" if old else "file_write"
        self._journal(p["operation"], kind, target, before_sha256=old["sha256"] if old else None)
        efi["files"] = [f for f in efi["files"] if f["path"] != target] + [dict(src, path=target)]
        return {"ok": True, "target": target, "sha256": src["sha256"], "kind": kind}

    # ---------------------------------------------------------------- files
    def do_put_chunk(self, p: dict[str, Any]) -> dict[str, Any]:
        data = base64.b64decode(p["data"])
        path = p["path"]
        cur = self.files.get(path, b"") if p["offset"] else b""
        if p["offset"] and len(cur) != p["offset"]:
            raise GuestError(f"{path}: expected offset {len(cur)}, got {p['offset']}")
        self.files[path] = cur + data
        return {"ok": True, "size": len(self.files[path])}

    def do_file_hash(self, p: dict[str, Any]) -> dict[str, Any]:
        data = self._read(p["path"])
        return {"path": p["path"], "size": len(data), "sha256": hashlib.sha256(data).hexdigest().upper()}

    def do_get_chunk(self, p: dict[str, Any]) -> dict[str, Any]:
        data = self._read(p["path"])
        chunk = data[p["offset"]:p["offset"] + p["length"]]
        return {"data": base64.b64encode(chunk).decode(), "size": len(data)}

    def do_move_file(self, p: dict[str, Any]) -> dict[str, Any]:
        if p["dest"] in self.files and not p.get("overwrite"):
            raise GuestError(f"{p['dest']} already exists")
        self.files[p["dest"]] = self.files.pop(p["source"])
        return {"ok": True}

    def _read(self, path: str) -> bytes:
        if path in self.files:
            return self.files[path]
        if path in self.reachable_paths:
            return self.reachable_paths[path]
        raise GuestError(f"Cannot find path '{path}' because it does not exist.")

    # ---------------------------------------------------------------- journal helpers
    def _journal(self, operation: str, kind: str, target: str, **detail: Any) -> None:
        self.journal.append({"id": len(self.journal) + 1, "operation": operation, "kind": kind, "target": target,
                             "rolled_back": False, **detail})
        self.files[JOURNAL] = json.dumps({"schema": "guestprep.windows.journal/1", "entries": self.journal}).encode()

    def _state(self) -> dict[str, Any]:
        if self.facts.get("guestprep") is None:
            self.facts["guestprep"] = {}
        return self.facts["guestprep"]

    def _reg_get(self, path: str, name: str) -> Any:
        f = self.facts
        if path.startswith(SERVICES_KEY) and name == "Start":
            svc = f["services"].get(path[len(SERVICES_KEY):])
            return None if svc is None else svc["start"]
        if (path, name) == HIBERBOOT:
            return 1 if f["power"]["fast_startup"] else 0
        if (path, name) == HIBERNATE:
            return 1 if f["power"]["hibernation"] else 0
        if (path, name) == SANPOLICY:
            return {v: k for k, v in SAN_CODES.items()}.get(f["storage"]["san_policy"])
        raise GuestError(f"fake registry has no {path}\\{name}")

    def _reg_set(self, path: str, name: str, value: Any) -> None:
        f = self.facts
        if path.startswith(SERVICES_KEY) and name == "Start":
            svc = f["services"].get(path[len(SERVICES_KEY):])
            if svc is None:
                raise GuestError(f"Cannot find path '{path}' because it does not exist.")
            svc["start"] = value
        elif (path, name) == HIBERBOOT:
            f["power"]["fast_startup"] = value == 1
        elif (path, name) == HIBERNATE:
            f["power"]["hibernation"] = value == 1
            if value != 1:
                f["power"]["fast_startup"] = False
        elif (path, name) == SANPOLICY:
            f["storage"]["san_policy"] = SAN_CODES.get(value) if value is not None else ("OnlineAll" if f["os"]["product_type"] == 1 else "OfflineShared")
        else:
            raise GuestError(f"fake registry has no {path}\\{name}")

    def _set_journaled(self, op: str, path: str, name: str, value: Any) -> dict[str, Any]:
        before = self._reg_get(path, name)
        if before == value:
            return {"target": f"{path}\\{name}", "changed": False, "value": value}
        self._journal(op, "registry_set", f"{path}\\{name}", path=path, name=name, before=before, after=value)
        self._reg_set(path, name, value)
        after = self._reg_get(path, name)
        if after != value:
            raise GuestError(f"read back {path}\\{name} = {after}, expected {value}")
        return {"target": f"{path}\\{name}", "changed": True, "before": before, "after": value}

    # ---------------------------------------------------------------- operations
    def do_install_virtio(self, p: dict[str, Any]) -> dict[str, Any]:
        media = p["media"]
        data = self._read(media)
        digest = hashlib.sha256(data).hexdigest()
        if digest.lower() != p["sha256"].lower():
            raise GuestError(f"SHA-256 of {media} is {digest.upper()}, expected {p['sha256'].upper()}: not installing")
        steps = []
        f = self.facts
        have = {d["original_name"] for d in f["driver_store"] or []}
        for n, (name, cls) in enumerate([("vioscsi", "SCSIAdapter"), ("viostor", "SCSIAdapter"), ("netkvm", "Net"),
                                         ("vioser", "System"), ("balloon", "System")]):
            if f"{name}.inf" not in have:
                f["driver_store"] = (f["driver_store"] or []) + [{"inf": f"oem{20 + n}.inf", "original_name": f"{name}.inf",
                                                                 "provider": "Red Hat, Inc.", "version": "100.95.104.26200",
                                                                 "class": cls}]
                steps.append({"action": "driver_added", "inf": f"{name}.inf"})
            if f["services"].get(name) is None:
                f["services"][name] = {"start": 3, "image_path": f"System32\\drivers\\{name}.sys", "group": None}
        if steps:
            self._journal("windows.virtio_drivers", "driver_install", media, sha256=digest, reversible=False)
        if not f["qemu_ga"]["installed"]:
            f["qemu_ga"] = {"installed": True, "state": "Stopped", "start_mode": "Auto"}
            steps.append({"action": "qemu_ga_installed"})
        for svc in p.get("boot_critical") or []:
            steps.append(self._set_journaled("windows.virtio_drivers", SERVICES_KEY + svc, "Start", 0))
        return {"ok": True, "steps": steps}

    def do_set_boot_critical(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "steps": [self._set_journaled("windows.boot_critical", SERVICES_KEY + s, "Start", 0)
                                      for s in p["services"]]}

    def do_disable_fast_startup(self, p: dict[str, Any]) -> dict[str, Any]:
        steps = [self._set_journaled("windows.fast_startup", *HIBERBOOT, 0)]
        if p.get("hibernate_off", True):
            steps.append(self._set_journaled("windows.fast_startup", *HIBERNATE, 0))
        return {"ok": True, "steps": steps}

    def do_set_san_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        code = {v: k for k, v in SAN_CODES.items()}[p["policy"]]
        return {"ok": True, "steps": [self._set_journaled("windows.san_policy", *SANPOLICY, code)]}

    def do_capture_network(self, p: dict[str, Any]) -> dict[str, Any]:
        captured = [a for a in self.facts["network"]["adapters"] if not a["dhcp"]]
        doc = {"schema": "guestprep.windows.network-capture/1", "hostname": self.facts["hostname"],
               "adapters": captured, "routes": self.facts["network"]["routes"]}
        path = "C:\\ProgramData\\guestprep\\network-capture.json"
        changed = self.files.get(path) != json.dumps(doc).encode()
        if changed:
            self._journal("windows.network_capture", "file_write", path, before=None)
            self.files[path] = json.dumps(doc).encode()
        task = p["task"]
        if task not in self.tasks:
            self._journal("windows.network_capture", "task_create", task)
            self.tasks[task] = {"script": "restore-network.ps1"}
        macs = sorted({_mac(a["mac"]) for a in captured})
        self._state()["network_capture"] = {"macs": macs, "task": task}
        return {"ok": True, "capture": doc, "steps": [{"file": path, "changed": changed}, {"task": task}]}

    def do_schedule_vmware_tools_removal(self, p: dict[str, Any]) -> dict[str, Any]:
        task = p["task"]
        if task not in self.tasks:
            self._journal("windows.vmware_tools_removal", "task_create", task, product_code=p["product_code"])
            self.tasks[task] = {"script": "remove-vmware-tools.ps1", "product_code": p["product_code"]}
        self._state()["vmware_tools_removal"] = {"task": task, "product_code": p["product_code"]}
        # VMware Tools is still installed: removal happens at first boot on KVM only.
        return {"ok": True, "steps": [{"task": task}]}

    def do_suspend_bitlocker(self, p: dict[str, Any]) -> dict[str, Any]:
        steps = []
        for v in self.facts.get("bitlocker") or []:
            if v["mount"] in p["mounts"] and v["protection_status"].lower() == "on":
                v["protection_status"] = "off"
                self._journal("windows.bitlocker_suspend", "bitlocker_suspend", v["mount"],
                              reboot_count=p["reboot_count"], reversible=True)
                steps.append({"mount": v["mount"], "suspended": True, "reboot_count": p["reboot_count"]})
        escrow = self._state().setdefault("bitlocker_escrow", {})
        for m in p["mounts"]:
            escrow[m] = True
        return {"ok": True, "steps": steps}

    def do_rollback(self, p: dict[str, Any]) -> dict[str, Any]:
        restored = []
        for e in reversed(self.journal):
            if e["rolled_back"]:
                continue
            if e["kind"] == "registry_set":
                self._reg_set(e["path"], e["name"], e["before"])
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "restored": e["before"]})
            elif e["kind"] == "task_create":
                self.tasks.pop(e["target"], None)
                st = self._state()
                for k in ("network_capture", "vmware_tools_removal"):
                    if (st.get(k) or {}).get("task") == e["target"]:
                        st.pop(k)
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "removed": True})
            elif e["kind"] in ("file_write", "file_replace") and e["target"].startswith("\\EFI\\"):
                efi = self.facts["efi"]
                if e["kind"] == "file_write":
                    efi["files"] = [f for f in efi["files"] if f["path"] != e["target"]]
                else:
                    for f in efi["files"]:
                        if f["path"] == e["target"]:
                            f["sha256"] = e["before_sha256"]
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "restored": True})
            elif e["kind"] == "file_write":
                self.files.pop(e["target"], None)
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "removed": True})
            elif e["kind"] == "bitlocker_suspend":
                for v in self.facts.get("bitlocker") or []:
                    if v["mount"] == e["target"]:
                        v["protection_status"] = "on"
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "resumed": True})
            else:
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "skipped": "not reversible"})
                continue
            e["rolled_back"] = True
        self.files[JOURNAL] = json.dumps({"schema": "guestprep.windows.journal/1", "entries": self.journal}).encode()
        return {"ok": True, "restored": restored}

    def do_run_argv(self, p: dict[str, Any]) -> ScriptResult:
        argv = p["argv"]
        if argv and argv[0].lower() in ("hostname", "hostname.exe"):
            out, rc = (self.facts["hostname"] + "\r\n").encode(), 0
        elif argv and argv[0].lower() == "cmd.exe" and argv[1:3] == ["/c", "exit"]:
            out, rc = b"", int(argv[3])
        elif argv and argv[0].lower() == "echoargs.exe":   # shows arguments arrive unmangled
            out, rc = ("\r\n".join(argv[1:]) + "\r\n").encode("utf-8"), 0
        else:
            return ScriptResult(b"", clixml_error(f"The term '{argv[0]}' is not recognized as the name of a cmdlet"), 1)
        if p.get("report_rc"):
            return ScriptResult(out + f"guestprep-rc={rc}\r\n".encode(), b"", 0)
        return ScriptResult(out, b"", rc)

    def do_test_echo(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"echo": p, "text": "Привет, мир — こんにちは — مرحبا", "stdin": self._stdin}

    def do_test_fail(self, p: dict[str, Any]) -> ScriptResult:
        return ScriptResult(b"", clixml_error(p.get("message", "Zugriff verweigert")), 1)


class GuestError(Exception):
    pass


def _mac(mac: str) -> str:
    h = re.sub(r"[^0-9a-f]", "", mac.lower())
    return ":".join(h[i:i + 2] for i in range(0, 12, 2))


def _drop(state: Any, text: str, result: ScriptResult) -> ScriptResult:
    cfg = state.config
    if cfg.drop_after_marker and script_marker(text) == cfg.drop_after_marker and cfg.drop_count > 0:
        cfg.drop_count -= 1
        result.drop = True
    return result


def run_winrs(state: Any, argv: list[str], stdin: bytes) -> ScriptResult | None:
    """What powershell.exe does with our bootstrap: read the payload line, run the script."""
    exe = argv[0].lower() if argv else ""
    if exe not in ("powershell.exe", "powershell"):
        return ScriptResult(b"", f"'{argv[0] if argv else ''}' is not recognized as an internal or external command\r\n".encode(), 1)
    try:
        encoded = argv[argv.index("-EncodedCommand") + 1]
        boot = decode_command(encoded)
    except (ValueError, IndexError):
        return ScriptResult(b"", clixml_error("fake guest: only -EncodedCommand is supported"), 1)
    if "# guestprep-bootstrap/1" not in boot:
        return ScriptResult(b"", clixml_error("fake guest: unknown encoded command"), 1)
    fault = powershell_model.bootstrap_fault(boot, state.guest)
    if fault is not None:
        return fault if isinstance(fault, ScriptResult) else ScriptResult(b"", clixml_error(fault), 1)
    line = stdin.split(b"\n", 1)[0]
    payload = parse_payload_line(line)
    res = state.guest.run_script(payload["script"], payload["args"], payload.get("stdin"))
    state.log.append({"transport": "winrs", "marker": script_marker(payload["script"]), "args": payload["args"]})
    return None if res is None else _drop(state, payload["script"], res)


def run_psrp(state: Any, script: str, args: list[str], stdin: str | None) -> ScriptResult | None:
    res = state.guest.run_script(script, args, stdin)
    state.log.append({"transport": "psrp", "marker": script_marker(script), "args": args})
    return None if res is None else _drop(state, script, res)
