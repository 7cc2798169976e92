"""Run the Linux collector and parse its raw JSON into :class:`LinuxFacts`.

The collector ships raw material (files, command outputs, sysfs records); all
interpretation lives here, in pure functions tested with data fixtures
(tests/facts/linux/*.json: raw collector output -> expected facts).
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any, Mapping

from guestprep.connectors.base import Script
from guestprep.errors import CollectorError
from guestprep.scripts import read_script
from guestprep.facts.efi import parse_linux_efi
from guestprep.facts.linux_model import (
    BlockDevice,
    CrypttabEntry,
    FstabEntry,
    Kernel,
    LinuxFacts,
    Mount,
    NetConfig,
    NetInterface,
    Partition,
)

COLLECT_SCHEMA = "guestprep.linux.collect/1"
MAX_OUTPUT = 32 * 1024 * 1024  # a collector document larger than this is refused, not parsed


def collector_script() -> str:
    return read_script("linux", "collect.sh")


def collect(conn: Any, timeout: float = 300.0, sudo: bool = False) -> LinuxFacts:
    """One round trip: run collect.sh on the guest and parse its document."""
    res = conn.run(Script(collector_script(), name="collect.sh"), timeout=timeout, sudo=sudo)
    return parse(decode_output(res.stdout, res.rc, res.stderr))


def decode_output(stdout: bytes, rc: int = 0, stderr: bytes = b"") -> dict[str, Any]:
    if len(stdout) > MAX_OUTPUT:
        raise CollectorError(f"collector output is {len(stdout)} bytes, over the {MAX_OUTPUT}-byte limit; refusing to parse")
    text = stdout.decode("utf-8", errors="replace").strip()
    if not text:
        err = stderr.decode("utf-8", errors="replace").strip().splitlines()
        hint = f": {err[-1][:200]}" if err else ""
        raise CollectorError(f"collector printed nothing (exit {rc}){hint}")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        snippet = text[max(0, exc.pos - 40): exc.pos + 40].replace("\n", "\\n")
        raise CollectorError(
            f"collector output is not valid JSON ({exc.msg} at byte {exc.pos} of {len(text)}; near {snippet!r})"
            + ("; it looks truncated" if exc.pos >= len(text) - 2 else "")
        ) from None
    if not isinstance(raw, dict):
        raise CollectorError(f"collector output is a JSON {type(raw).__name__}, expected an object")
    return raw


# --------------------------------------------------------------------------- parsing


def _req(raw: Mapping[str, Any], key: str, typ: type) -> Any:
    val = raw.get(key)
    if not isinstance(val, typ):
        raise CollectorError(f"collector document: field {key!r} missing or not a {typ.__name__}")
    return val


def _check_shape(raw: Mapping[str, Any]) -> None:
    """The containers the parsers walk have the types the collector promises (a guest can print anything)."""
    def fail(what: str) -> None:
        raise CollectorError(f"collector document: {what}")

    for key, typ in (("id", dict), ("files", dict), ("cmds", dict)):
        _req(raw, key, typ)
    for key, typ in (("exists", dict), ("kernels", list), ("sys_block", str), ("sys_net", str)):
        if raw.get(key) is not None and not isinstance(raw[key], typ):
            fail(f"field {key!r} is not a {typ.__name__}")
    if not all(isinstance(v, (str, type(None))) for v in raw["id"].values()):
        fail("field 'id' holds a value that is not text")
    if not all(isinstance(k, str) and isinstance(v, (str, type(None))) for k, v in raw["files"].items()):
        fail("field 'files' holds a value that is not text")
    for name, cmd in raw["cmds"].items():
        if not isinstance(cmd, dict) or not isinstance(cmd.get("out", ""), (str, type(None))) \
                or not isinstance(cmd.get("err", ""), (str, type(None))) \
                or (cmd.get("rc") is not None and (not isinstance(cmd["rc"], int) or isinstance(cmd["rc"], bool))):
            fail(f"command record {name!r} is not {{rc: integer, out: text, err: text}}")
    if not all(isinstance(k, dict) for k in raw.get("kernels") or []):
        fail("field 'kernels' holds an entry that is not an object")


def parse(raw: Mapping[str, Any]) -> LinuxFacts:
    if not isinstance(raw, Mapping):
        raise CollectorError(f"collector document is a {type(raw).__name__}, expected an object")
    if raw.get("schema") != COLLECT_SCHEMA:
        raise CollectorError(f"collector document: schema is {raw.get('schema')!r}, expected {COLLECT_SCHEMA!r}")
    _check_shape(raw)
    try:
        return _parse(raw)
    except CollectorError:
        raise
    except (TypeError, AttributeError, ValueError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        # a shape _check_shape does not cover (nested records): one clear error for this guest, not a traceback
        raise CollectorError(f"collector document is malformed ({type(exc).__name__}: {str(exc)[:200]})") from None


def _parse(raw: Mapping[str, Any]) -> LinuxFacts:
    if raw.get("schema") != COLLECT_SCHEMA:
        raise CollectorError(f"collector document: schema is {raw.get('schema')!r}, expected {COLLECT_SCHEMA!r}")
    ident = _req(raw, "id", dict)
    tools = parse_tools(raw.get("tools"))
    files: dict[str, str] = _req(raw, "files", dict)
    exists: dict[str, bool] = raw.get("exists") or {}
    cmds: dict[str, dict[str, Any]] = _req(raw, "cmds", dict)
    unknown: dict[str, str] = {}

    osr = parse_os_release(files.get("/etc/os-release") or files.get("/usr/lib/os-release") or "")
    distro_id = osr.get("ID", "").lower() or ("arch" if "/etc/arch-release" in files else "unknown")
    like = osr.get("ID_LIKE", "").lower().split()
    if distro_id == "unknown":
        unknown["distro_id"] = "no /etc/os-release"

    cmdline = (files.get("/proc/cmdline") or "").strip()
    cmd_args = parse_cmdline(cmdline)
    default_grub = parse_shell_vars(files.get("/etc/default/grub") or "")
    grub_cmdline = " ".join(
        v for v in (default_grub.get("GRUB_CMDLINE_LINUX"), default_grub.get("GRUB_CMDLINE_LINUX_DEFAULT")) if v
    ) or None

    kernels = [parse_kernel(k, ident.get("kernel", "")) for k in raw.get("kernels") or []]
    if not kernels:
        unknown["kernels"] = "no installed kernel found under /lib/modules (container or unusual layout)"

    lsblk = parse_lsblk(cmds.get("lsblk", {}))
    blkid = parse_blkid(cmds.get("blkid", {}))
    block_devices = parse_sys_block(raw.get("sys_block") or "", lsblk, blkid)
    mounts = parse_mounts(files.get("/proc/mounts") or "", cmds.get("df", {}))
    root_fstype = next((m.fstype for m in mounts if m.path == "/"), None)

    lvm_conf = files.get("/etc/lvm/lvm.conf") or ""
    devfile = files.get("/etc/lvm/devices/system.devices")
    use_devicesfile = _lvm_setting(lvm_conf, "use_devicesfile")

    nic_pins = parse_nic_pins(files)
    interfaces = parse_interfaces(raw.get("sys_net") or "", cmds.get("ip_addr", {}), cmds.get("ip_link", {}))
    net_configs = parse_net_configs(files)

    detect = cmds.get("detect_virt", {})
    virt = (detect.get("out") or "").strip() or None if detect.get("rc") in (0, 1) else None
    if virt is None:
        unknown["virtualization"] = "systemd-detect-virt not available"

    packages = parse_packages(cmds.get("packages", {}))
    qga_installed = bool(tools.get("qemu-ga")) or exists.get("/usr/bin/qemu-ga") or exists.get("/usr/sbin/qemu-ga") \
        or "qemu-guest-agent" in packages
    qga = {
        "installed": bool(qga_installed),
        "enabled": _systemctl_state(cmds.get("qga_enabled", {}), {"enabled", "static", "indirect", "alias"}),
        "active": _systemctl_state(cmds.get("qga_active", {}), {"active"}),
    }
    vm_tools = {
        "open_vm_tools": "open-vm-tools" in packages or bool(tools.get("vmtoolsd")) and not exists.get("/etc/vmware-tools"),
        "vmware_tools_tarball": bool(tools.get("vmware-uninstall-tools.pl")) or bool(exists.get("/usr/lib/vmware-tools")),
        "present": bool(tools.get("vmtoolsd")) or "open-vm-tools" in packages or bool(exists.get("/etc/vmware-tools")),
        "version": (cmds.get("vmtools_version", {}).get("out") or "").strip() or None,
    }

    boot_mode = "uefi" if ident.get("efi") == "1" else "bios"
    sb_raw = (ident.get("secure_boot") or "").strip()
    secure_boot = None if boot_mode == "bios" and not sb_raw else (sb_raw == "1")
    if boot_mode == "uefi" and not sb_raw:
        secure_boot = None
        unknown["secure_boot"] = "SecureBoot EFI variable not readable"

    bootloader, bl_cfg = detect_bootloader(exists, tools)

    sudo = ident.get("sudo") or None
    efi = parse_linux_efi(raw["efi"]) if raw.get("efi") is not None else None
    return LinuxFacts(
        hostname=ident.get("hostname", ""),
        distro_id=distro_id,
        distro_like=like,
        distro_version=osr.get("VERSION_ID", ""),
        distro_name=osr.get("PRETTY_NAME", osr.get("NAME", distro_id)),
        family=family_of(distro_id, like),
        arch=ident.get("arch", ""),
        running_kernel=ident.get("kernel", ""),
        kernels=kernels,
        initramfs_generator=detect_generator(tools, files, distro_id, like),
        boot_mode=boot_mode,
        secure_boot=secure_boot,
        bootloader=bootloader,
        bootloader_config=bl_cfg,
        cmdline=cmdline,
        cmdline_root=cmd_args.get("root"),
        cmdline_resume=cmd_args.get("resume"),
        default_grub_cmdline=grub_cmdline,
        fstab=parse_fstab(files.get("/etc/fstab") or ""),
        crypttab=parse_crypttab(files.get("/etc/crypttab") or ""),
        block_devices=block_devices,
        mounts=mounts,
        root_fstype=root_fstype,
        lvm_devices_file="/etc/lvm/devices/system.devices" if devfile is not None else None,
        lvm_devices_entries=[l for l in (devfile or "").splitlines() if l.strip() and not l.startswith("#")] if devfile is not None else None,
        lvm_use_devicesfile=None if use_devicesfile is None else use_devicesfile == "1",
        lvm_filter=_lvm_setting(lvm_conf, "filter") or _lvm_setting(lvm_conf, "global_filter"),
        net_configs=net_configs,
        interfaces=interfaces,
        nic_pins=nic_pins,
        bootloader_args=parse_bootloader_args(cmds.get("bootcfg_args")),
        guestprep_units={p: t for p, t in files.items() if p.startswith("/etc/systemd/system/guestprep-")},
        qemu_guest_agent=qga,
        vmware_tools=vm_tools,
        package_manager=next((pm for pm in ("apt-get", "dnf", "yum", "zypper", "pacman", "apk") if tools.get(pm)), None),
        init_system="systemd" if ident.get("systemd") == "1" else None,
        virtualization=virt,
        is_root=str(ident.get("uid")) == "0",
        sudo=sudo,
        unknown=unknown,
        efi=efi,
    )


def parse_bootloader_args(cmd: Mapping[str, Any] | None) -> list[str] | None:
    """Distinct ``root=``/``resume=`` tokens of the bootloader config; None when it could not be read."""
    if not cmd or cmd.get("rc") not in (0, 1):  # grep: 1 = no match (no such arguments)
        return None
    return sorted(set(_lines(cmd.get("out"))))


def parse_tools(value: Any) -> dict[str, str | None]:
    """``name<TAB>path`` lines (path empty when the tool is missing); a mapping is accepted too."""
    if isinstance(value, dict):
        return {k: (v or None) for k, v in value.items()}
    if not isinstance(value, str):
        raise CollectorError("collector document: field 'tools' missing or not a str")
    out: dict[str, str | None] = {}
    for line in value.splitlines():
        name, _, path = line.partition("\t")
        if name:
            out[name] = path.strip() or None
    return out


def parse_os_release(text: str) -> dict[str, str]:
    return parse_shell_vars(text)


def parse_shell_vars(text: str) -> dict[str, str]:
    """KEY=value lines as in os-release and /etc/default/grub (quotes removed, no expansion)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, val = line.partition("=")
        key = key.strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        try:
            parts = shlex.split(val, comments=True)
            out[key] = " ".join(parts)
        except ValueError:
            out[key] = val.strip().strip("\"'")
    return out


def family_of(distro_id: str, like: list[str]) -> str:
    ids = [distro_id, *like]
    for fam, members in (
        ("debian", {"debian", "ubuntu", "linuxmint", "raspbian"}),
        ("rhel", {"rhel", "centos", "fedora", "rocky", "almalinux", "ol", "amzn", "scientific"}),
        ("suse", {"sles", "suse", "opensuse", "opensuse-leap", "opensuse-tumbleweed", "sled"}),
        ("arch", {"arch", "manjaro", "endeavouros"}),
        ("alpine", {"alpine"}),
    ):
        if any(i in members for i in ids):
            return fam
    return "other"


def parse_cmdline(cmdline: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in cmdline.split():
        if "=" in tok:
            k, _, v = tok.partition("=")
            out.setdefault(k, v)
    return out


def _lines(value: Any) -> list[str]:
    return [l for l in (value or "").splitlines() if l.strip()]


def parse_kernel(rec: Mapping[str, Any], running: str) -> Kernel:
    modules = rec.get("initramfs_modules")
    listed = None
    if modules is not None and rec.get("list_rc") == 0:
        listed = set(_lines(modules))
    config = {}
    for line in _lines(rec.get("config")):
        k, _, v = line.partition("=")
        config[k] = v
    return Kernel(
        version=rec.get("version", ""),
        running=rec.get("version") == running,
        initramfs=rec.get("initramfs") or None,
        initramfs_size=rec.get("initramfs_size"),
        initramfs_modules=listed,
        builtin_modules={m.replace("-", "_") for m in _lines(rec.get("builtin"))},
        available_modules=set(_lines(rec.get("available"))),
        config_virtio=config,
    )


def parse_lsblk(cmd: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    if cmd.get("rc") != 0:
        return out
    for line in _lines(cmd.get("out")):
        rec = dict(re.findall(r'([A-Z:]+)="([^"]*)"', line))
        if rec.get("NAME"):
            out[rec.get("KNAME") or rec["NAME"]] = rec
    return out


def parse_blkid(cmd: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    if cmd.get("rc") != 0:
        return out
    cur: dict[str, str] = {}
    for line in (cmd.get("out") or "").splitlines() + [""]:
        if not line.strip():
            if cur.get("DEVNAME"):
                out[cur["DEVNAME"].rsplit("/", 1)[-1]] = cur
            cur = {}
            continue
        k, _, v = line.partition("=")
        cur[k] = v
    return out


def _int(v: str) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def parse_sys_block(text: str, lsblk: dict, blkid: dict) -> list[BlockDevice]:
    devices: dict[str, BlockDevice] = {}
    for line in _lines(text):
        f = line.split("\t")
        if f[0] == "disk" and len(f) >= 9:
            _, name, size, lbs, pbs, rot, driver, model, vendor = f[:9]
            devices[name] = BlockDevice(
                name=name, size_sectors=_int(size), logical_sector_size=_int(lbs), physical_sector_size=_int(pbs),
                rotational=None if rot == "-" else rot == "1", driver=None if driver == "-" else driver,
                model=None if model == "-" else model.strip("_").replace("_", " "),
                vendor=None if vendor == "-" else vendor.strip("_").replace("_", " "),
            )
        elif f[0] == "part" and len(f) >= 5 and f[1] in devices:
            name = f[2]
            meta = {**blkid.get(name, {}), **{k: v for k, v in lsblk.get(name, {}).items() if v}}
            devices[f[1]].partitions.append(Partition(
                name=name, start_sector=_int(f[3]), size_sectors=_int(f[4]),
                fstype=meta.get("FSTYPE") or meta.get("TYPE") or None, uuid=meta.get("UUID") or None,
                partuuid=meta.get("PARTUUID") or None, mountpoint=meta.get("MOUNTPOINT") or None,
            ))
    return list(devices.values())


def parse_mounts(proc_mounts: str, df: Mapping[str, Any]) -> list[Mount]:
    fstypes: dict[str, tuple[str, str]] = {}
    for line in _lines(proc_mounts):
        f = line.split()
        if len(f) >= 3:
            fstypes[f[1].replace("\\040", " ")] = (f[0], f[2])
    mounts: list[Mount] = []
    seen = set()
    for line in _lines(df.get("out"))[1:]:
        f = line.split()
        if len(f) < 6 or f[5] in seen:
            continue
        seen.add(f[5])
        dev, fstype = fstypes.get(f[5], (f[0], ""))
        mounts.append(Mount(path=f[5], device=dev, fstype=fstype,
                            free_bytes=(_int(f[3]) or 0) * 1024 if _int(f[3]) is not None else None,
                            total_bytes=(_int(f[1]) or 0) * 1024 if _int(f[1]) is not None else None))
    return mounts


def _table_rows(text: str, min_fields: int) -> list[list[str]]:
    """Whitespace-separated table rows (fstab, crypttab), comments skipped, padded to 4 fields."""
    rows = []
    for line in _lines(text):
        fields = line.split()
        if fields[0].startswith("#") or len(fields) < min_fields:
            continue
        rows.append(fields + [""] * (4 - len(fields)))
    return rows


def parse_fstab(text: str) -> list[FstabEntry]:
    return [FstabEntry(spec=f[0], mountpoint=f[1], fstype=f[2], options=f[3]) for f in _table_rows(text, 3)]


def parse_crypttab(text: str) -> list[CrypttabEntry]:
    return [CrypttabEntry(name=f[0], device=f[1], keyfile=f[2], options=f[3]) for f in _table_rows(text, 2)]


def parse_interfaces(sys_net: str, ip_addr: Mapping[str, Any], ip_link: Mapping[str, Any]) -> list[NetInterface]:
    nics: dict[str, NetInterface] = {}
    for line in _lines(sys_net):
        f = line.split("\t")
        if f[0] == "nic" and len(f) >= 5 and f[4] == "0":  # physical NICs only (have a device)
            nics[f[1]] = NetInterface(name=f[1], mac=None if f[2] == "-" else f[2].lower(),
                                      driver=None if f[3] == "-" else f[3])
    for line in _lines(ip_addr.get("out")):
        m = re.match(r"\d+:\s+(\S+)\s+inet6?\s+(\S+)", line)
        if m and m.group(1) in nics:
            nics[m.group(1)].addresses.append(m.group(2))
    for line in _lines(ip_link.get("out")):
        m = re.match(r"\d+:\s+([^:@]+)[:@]", line)
        if m and m.group(1) in nics:
            nics[m.group(1)].altnames.extend(re.findall(r"altname (\S+)", line))
    return list(nics.values())


_MAC_RE = re.compile(r"(?i)\b([0-9a-f]{2}(?::[0-9a-f]{2}){5})\b")


def parse_net_configs(files: Mapping[str, str]) -> list[NetConfig]:
    """Which interface names (fragile) and MACs (stable) each network config binds to."""
    out: list[NetConfig] = []
    for path, text in sorted(files.items()):
        cfg: NetConfig | None = None
        if path.startswith("/etc/netplan/"):
            cfg = _netplan(path, text)
        elif path.startswith("/etc/NetworkManager/system-connections/"):
            v = _ini_values(text)
            names = [v["interface-name"]] if v.get("interface-name") else []
            macs = [v["mac-address"].lower()] if v.get("mac-address") else []
            cfg = NetConfig(path, "networkmanager", names, macs, static=v.get("method") == "manual")
        elif "/ifcfg-" in path:
            v = parse_shell_vars(text)
            name = v.get("DEVICE") or v.get("NAME") or path.rsplit("ifcfg-", 1)[-1]
            if name == "lo":
                continue
            macs = [v["HWADDR"].lower()] if v.get("HWADDR") else []
            static = v.get("BOOTPROTO", "").lower() in ("static", "none", "") and bool(v.get("IPADDR"))
            cfg = NetConfig(path, "ifcfg", [] if macs else [name], macs, static=static)
        elif path == "/etc/network/interfaces" or path.startswith("/etc/network/interfaces.d/"):
            names, static = [], False
            for line in _lines(text):
                f = line.split()
                if len(f) >= 2 and f[0] in ("iface", "auto", "allow-hotplug") and f[1] != "lo":
                    if f[1] not in names:
                        names.append(f[1])
                    if f[0] == "iface" and len(f) >= 4 and f[3] == "static":
                        static = True
            if names:
                cfg = NetConfig(path, "ifupdown", names, [], static)
        elif path.endswith(".network") and "/systemd/network/" in path:
            v = _ini_values(text)
            names = v.get("Name", "").split()
            macs = [m.lower() for m in v.get("MACAddress", "").split()]
            cfg = NetConfig(path, "networkd", [n for n in names if "*" not in n], macs, static="Address" in v)
        if cfg and (cfg.interfaces or cfg.macs):
            out.append(cfg)
    return out


def parse_nic_pins(files: Mapping[str, str]) -> dict[str, str]:
    """Interface names already pinned to a MAC (systemd .link files, persistent-net udev rules)."""
    pins: dict[str, str] = {}
    for path, text in files.items():
        if path.endswith(".link") and "/systemd/network/" in path:
            v = _ini_values(text)
            if v.get("Name") and v.get("MACAddress"):
                pins[v["Name"]] = v["MACAddress"].lower()
        elif path.startswith("/etc/udev/rules.d/") and path.endswith(".rules"):
            for line in _lines(text):
                mac = re.search(r'ATTR\{address\}=="([0-9a-fA-F:]{17})"', line)
                name = re.search(r'NAME="([^"]+)"', line)
                if mac and name and not line.lstrip().startswith("#"):
                    pins[name.group(1)] = mac.group(1).lower()
    return pins


def _ini_values(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in _lines(text):
        line = line.strip()
        if line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        k, _, v = line.partition("=")
        out.setdefault(k.strip(), v.strip())
    return out


def _netplan(path: str, text: str) -> NetConfig | None:
    try:
        import yaml

        doc = yaml.safe_load(text) or {}
    except Exception:
        return NetConfig(path, "netplan", [], [], False)
    names: list[str] = []
    macs: list[str] = []
    static = False
    net = doc.get("network", {}) if isinstance(doc, dict) else {}
    for section in ("ethernets", "bonds", "bridges", "vlans"):
        for ifname, conf in (net.get(section) or {}).items():
            conf = conf or {}
            match = conf.get("match") or {}
            if section == "ethernets":
                if match.get("macaddress"):
                    macs.append(str(match["macaddress"]).lower())
                elif match.get("name"):
                    if "*" not in str(match["name"]):
                        names.append(str(match["name"]))
                elif not match:
                    names.append(str(ifname))
            if conf.get("addresses"):
                static = True
            for iface in conf.get("interfaces") or []:
                if iface not in names and iface not in (net.get("ethernets") or {}):
                    names.append(str(iface))
    return NetConfig(path, "netplan", names, macs, static)


def parse_packages(cmd: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for line in _lines(cmd.get("out")):
        f = line.split("\t") if "\t" in line else line.split()
        # dpkg: "name\tversion\tinstall ok installed"; rpm: "name\tver-rel\tinstalled"; pacman: "name ver"
        if len(f) < 2 or not f[1] or "not installed" in line:
            continue
        if len(f) >= 3 and f[2].strip() not in ("install ok installed", "installed"):
            continue
        out[f[0]] = f[1]
    return out


def _systemctl_state(cmd: Mapping[str, Any], good: set[str]) -> bool | None:
    if cmd.get("rc") == 127:
        return None
    first = (cmd.get("out") or "").strip().splitlines()
    return bool(first) and first[0].strip() in good


def _lvm_setting(conf: str, key: str) -> str | None:
    val = None
    for line in conf.splitlines():
        s = line.split("#", 1)[0].strip()
        m = re.match(rf"{key}\s*=\s*(.+)$", s)
        if m:
            val = m.group(1).strip()
    return val


def detect_generator(tools: Mapping[str, Any], files: Mapping[str, str], distro_id: str, like: list[str]) -> str | None:
    fam = family_of(distro_id, like)
    if tools.get("mkinitcpio") and fam == "arch":
        return "mkinitcpio"
    if tools.get("dracut") and (fam in ("rhel", "suse") or not tools.get("update-initramfs")):
        return "dracut"
    if tools.get("update-initramfs"):
        return "initramfs-tools"
    if tools.get("mkinitcpio"):
        return "mkinitcpio"
    if tools.get("mkinitrd"):
        return "mkinitrd"
    return None


def detect_bootloader(exists: Mapping[str, bool], tools: Mapping[str, Any]) -> tuple[str | None, str | None]:
    if exists.get("/boot/grub2/grub.cfg"):
        return "grub2", "/boot/grub2/grub.cfg"
    if exists.get("/boot/grub/grub.cfg"):
        return "grub2", "/boot/grub/grub.cfg"
    if exists.get("/boot/loader/entries") and tools.get("bootctl"):
        return "systemd-boot", "/boot/loader/entries"
    if exists.get("/boot/extlinux/extlinux.conf"):
        return "extlinux", "/boot/extlinux/extlinux.conf"
    return None, None
