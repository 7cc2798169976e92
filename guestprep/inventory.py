"""Inventories: guestprep's fleet YAML, and the Ansible inventories admins already keep.

Every error names the file, the line and the field. Values that end up in a network
connection (names, addresses, users) are validated here, so nothing downstream has
to wonder whether a hostname carries ``;`` or ``$()``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Iterable

import yaml

from guestprep.errors import ConfigError
from guestprep.connectors import implied_os
from guestprep.models import Credentials, Guest, OSFamily, Transport

# Use with .fullmatch(): "$" also matches before a final newline, so "web1\n" passed a .match().
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,252}")
ADDRESS_RE = re.compile(r"(\[[0-9A-Fa-f:.%A-Za-z]+\]|[A-Za-z0-9][A-Za-z0-9._:%-]{0,252})")
USER_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@-]{0,63}(\\[A-Za-z0-9_.@$-]{1,64})?\$?")
ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

# An inventory of thousands of guests is well under 1 MiB; a bigger file is a mistake or an
# attack (a 25 MB file took minutes and 1.3 GB), refused before it is parsed.
MAX_INVENTORY_BYTES = 16 * 1024 * 1024
# Windows connection settings that must be whole numbers (the connectors call int() on them).
NUMERIC_VARS = ("ansible_winrm_operation_timeout_sec", "ansible_winrm_read_timeout_sec", "guestprep_winrm_retries",
                "ansible_psrp_operation_timeout", "ansible_psrp_read_timeout", "ansible_psrp_connection_timeout")

GUEST_FIELDS = {
    "name", "address", "port", "os", "transport", "user", "password_env", "key_file", "key_passphrase_env",
    "agent", "sudo", "sudo_password_env", "groups", "vars",
}
VAR_FIELDS = GUEST_FIELDS - {"name", "address", "groups"}  # what defaults/groups may set
TOP_FIELDS = {"version", "defaults", "groups", "guests"}

# Every transport under its own name, plus Ansible's other names for SSH.
ANSIBLE_CONNECTION = {t.value: t for t in Transport} | {
    "paramiko": Transport.SSH, "smart": Transport.SSH, "paramiko_ssh": Transport.SSH}


# --------------------------------------------------------------------------- YAML with line numbers


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping and of each key in it."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = loader.construct_mapping(node, deep=True)
    lines = {}
    for key_node, _ in node.value:
        try:
            lines[loader.construct_object(key_node)] = key_node.start_mark.line + 1
        except Exception:  # unhashable keys are reported by the schema check
            pass
    return _Located(mapping, node.start_mark.line + 1, lines)


class _Located(dict):
    def __init__(self, data: dict, line: int, key_lines: dict):
        super().__init__(data)
        self.line = line
        self.key_lines = key_lines

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise ConfigError("invalid YAML: nested too deeply", where=str(path)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"invalid YAML: {exc.problem or exc}", where=where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", where=str(path)) from None


# --------------------------------------------------------------------------- entry point


def load(path: str | Path) -> list[Guest]:
    """Load a fleet YAML or an Ansible inventory (YAML or INI); guests in file order."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_INVENTORY_BYTES + 1)  # bounded: also for /dev/zero or a FIFO
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError("inventory file not found", where=str(path)) from None
    except IsADirectoryError:
        raise ConfigError("inventory is a directory, not a file", where=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read inventory: {exc}", where=str(path)) from None
    if len(data) > MAX_INVENTORY_BYTES:
        raise ConfigError(f"inventory is larger than {MAX_INVENTORY_BYTES // (1024 * 1024)} MiB; split the fleet "
                          "into several inventories", where=str(path))
    if not text.strip():
        raise ConfigError("inventory is empty", where=str(path))
    if path.suffix.lower() in (".ini", ".cfg") or _looks_like_ini(text):
        guests = _load_ansible_ini(path, text)
    else:
        doc = _load_yaml(path, text)
        if not isinstance(doc, dict):
            raise ConfigError(f"inventory must be a mapping at the top, got {type(doc).__name__}", where=f"{path}:1")
        if "guests" in doc or "defaults" in doc:
            guests = _load_fleet(path, doc)
        else:
            guests = _load_ansible_yaml(path, doc)
    if not guests:
        raise ConfigError("inventory defines no guests", where=str(path))
    seen: dict[str, str] = {}
    for g in guests:
        if g.name in seen:
            raise ConfigError(f"guest {g.name!r} defined twice (first at {seen[g.name]})", where=g.source)
        seen[g.name] = g.source
    return guests


def _looks_like_ini(text: str) -> bool:
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith(("#", ";")):
            continue
        return s.startswith("[") and s.endswith("]")
    return False


# --------------------------------------------------------------------------- fleet YAML


def _load_fleet(path: Path, doc: _Located) -> list[Guest]:
    _reject_unknown(path, doc, TOP_FIELDS, "top level")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError("'defaults' must be a mapping", where=f"{path}:{doc.line_of('defaults')}")
    _reject_unknown(path, defaults, VAR_FIELDS, "defaults")
    _need_mapping_vars(path, defaults, "defaults", doc.line_of("defaults"))
    groups = doc.get("groups") or {}
    if not isinstance(groups, dict):
        raise ConfigError("'groups' must be a mapping of group name to settings", where=f"{path}:{doc.line_of('groups')}")
    group_vars: dict[str, dict] = {}
    for gname, gdef in groups.items():
        line = groups.line_of(gname) if isinstance(groups, _Located) else doc.line
        gdef = gdef or {}
        if not isinstance(gdef, dict):
            raise ConfigError(f"group {gname!r} must be a mapping", where=f"{path}:{line}")
        _reject_unknown(path, gdef, {"vars"}, f"group {gname!r}")
        gv = gdef.get("vars") or {}
        if not isinstance(gv, dict):
            raise ConfigError(f"group {gname!r}: 'vars' must be a mapping", where=f"{path}:{line}")
        _reject_unknown(path, gv, VAR_FIELDS, f"group {gname!r} vars")
        _need_mapping_vars(path, gv, f"group {gname!r}", line)
        group_vars[str(gname)] = gv
    entries = doc.get("guests")
    if not isinstance(entries, list):
        raise ConfigError("'guests' must be a list", where=f"{path}:{doc.line_of('guests')}")
    guests = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"guest #{i + 1} must be a mapping", where=f"{path}:{getattr(doc, 'line_of')('guests')}")
        line = getattr(entry, "line", 0)
        _reject_unknown(path, entry, GUEST_FIELDS, f"guest #{i + 1}")
        gnames = entry.get("groups") or []
        if isinstance(gnames, str):
            gnames = [gnames]
        if not isinstance(gnames, list) or not all(isinstance(gn, str) for gn in gnames):
            raise ConfigError("'groups' must be a list of group names", where=f"{path}:{entry.line_of('groups')}")
        _need_mapping_vars(path, entry, f"guest #{i + 1}", line)
        merged: dict[str, Any] = dict(defaults)
        merged_vars: dict[str, Any] = dict(defaults.get("vars") or {})
        for gn in gnames:
            if gn not in group_vars:
                raise ConfigError(f"unknown group {gn!r}", where=f"{path}:{entry.line_of('groups')}")
            merged.update(group_vars[gn])
            merged_vars.update(group_vars[gn].get("vars") or {})
        merged.update(entry)
        merged_vars.update(entry.get("vars") or {})
        merged["vars"] = merged_vars
        merged["groups"] = gnames
        guests.append(_guest_from(merged, path, line, entry))
    return guests


def _need_mapping_vars(path: Path, mapping: dict, what: str, line: int) -> None:
    if not isinstance(mapping.get("vars") or {}, dict):
        where = mapping.line_of("vars") if isinstance(mapping, _Located) else line
        raise ConfigError(f"{what}: 'vars' must be a mapping", where=f"{path}:{where}")


def _reject_unknown(path: Path, mapping: dict, allowed: set[str], what: str) -> None:
    for key in mapping:
        if key not in allowed:
            line = mapping.line_of(key) if isinstance(mapping, _Located) else "?"
            hint = _closest(str(key), allowed)
            raise ConfigError(f"unknown field {key!r} in {what}" + (f" (did you mean {hint!r}?)" if hint else "")
                              + f"; allowed: {', '.join(sorted(allowed))}", where=f"{path}:{line}")


def _closest(word: str, options: Iterable[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(word, list(options), n=1, cutoff=0.75)
    return m[0] if m else None


def _field_where(path: Path, entry: dict, key: str, line: int) -> str:
    return f"{path}:{entry.line_of(key) if isinstance(entry, _Located) and key in entry else line}"


def _guest_from(d: dict, path: Path, line: int, entry: dict) -> Guest:
    def where(key: str) -> str:
        return _field_where(path, entry, key, line) + f" (field {key!r})"

    name = d.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ConfigError(f"guest name {name!r} is missing or invalid (letters, digits, . _ @ -)", where=where("name"))
    transport = _enum(Transport, d.get("transport", "ssh"), where("transport"))
    address = d.get("address", "localhost" if transport is Transport.LOCAL else None)
    if not isinstance(address, str) or not ADDRESS_RE.fullmatch(address):
        raise ConfigError(f"address {address!r} is missing or not a host name / IP address", where=where("address"))
    port = d.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536):
        raise ConfigError(f"port {port!r} must be an integer 1-65535", where=where("port"))
    user = d.get("user")
    if user is not None and (not isinstance(user, str) or not USER_RE.fullmatch(user)):
        raise ConfigError(f"user {user!r} contains characters not allowed in a user name", where=where("user"))
    for key in ("password_env", "key_passphrase_env", "sudo_password_env"):
        val = d.get(key)
        if val is not None and (not isinstance(val, str) or not ENV_RE.fullmatch(val)):
            raise ConfigError(f"{key} must name an environment variable (not hold the secret itself)", where=where(key))
    for key in ("agent", "sudo"):
        if key in d and not isinstance(d[key], bool):
            raise ConfigError(f"{key} must be true or false", where=where(key))
    key_file = d.get("key_file")
    if key_file is not None and not isinstance(key_file, str):
        raise ConfigError("key_file must be a path", where=where("key_file"))
    vars_ = d.get("vars") or {}
    if not isinstance(vars_, dict):
        raise ConfigError("vars must be a mapping", where=where("vars"))
    creds = Credentials(
        user=user, password_env=d.get("password_env"), key_file=key_file,
        key_passphrase_env=d.get("key_passphrase_env"), use_agent=d.get("agent", True),
        sudo=d.get("sudo", False), sudo_password_env=d.get("sudo_password_env"),
    )
    return Guest(
        name=name, address=address, transport=transport, os=_enum(OSFamily, d.get("os", "auto"), where("os")),
        port=port, credentials=creds, groups=tuple(d.get("groups") or ()), vars=dict(vars_),
        origin=str(path), line=line,
    )


def _enum(cls, value: Any, where: str):
    try:
        return cls(str(value).lower())
    except ValueError:
        raise ConfigError(f"{value!r} is not one of {', '.join(m.value for m in cls)}", where=where) from None


# --------------------------------------------------------------------------- Ansible


def _truthy(v: Any) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on", "y")


def _from_ansible(host: str, hv: dict[str, Any], groups: list[str], path: Path, line: int) -> Guest:
    where = f"{path}:{line} (host {host!r})"
    conn = str(hv.get("ansible_connection", "ssh")).lower()
    if conn not in ANSIBLE_CONNECTION:
        raise ConfigError(f"ansible_connection {conn!r} is not supported ({', '.join(sorted(ANSIBLE_CONNECTION))})",
                          where=where)
    transport = ANSIBLE_CONNECTION[conn]
    port = hv.get("ansible_port", hv.get("ansible_ssh_port"))
    if port is not None:
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise ConfigError(f"ansible_port {port!r} is not a number", where=where) from None
    for key in NUMERIC_VARS:
        val = hv.get(key)
        number = val if isinstance(val, int) and not isinstance(val, bool) else (
            int(val) if isinstance(val, str) and re.fullmatch(r"[0-9]{1,6}", val.strip()) else None)
        if val is not None and (number is None or not 0 <= number <= 86400):
            raise ConfigError(f"{key} must be a whole number (0-86400), got {val!r}", where=where)
    d: dict[str, Any] = {
        "name": host,
        "address": str(hv.get("ansible_host", host)),
        "transport": transport.value,
        "os": hv.get("guestprep_os", implied_os(transport).value),
        "vars": {k: v for k, v in hv.items() if not k.startswith("ansible_")} | {
            k: v for k, v in hv.items() if k.startswith(("ansible_winrm_", "ansible_psrp_"))},
        "groups": groups,
    }
    if port is not None:
        d["port"] = port
    user = hv.get("ansible_user", hv.get("ansible_ssh_user"))
    if user is not None:
        d["user"] = str(user)
    if hv.get("ansible_ssh_private_key_file"):
        d["key_file"] = str(hv["ansible_ssh_private_key_file"])
    if "ansible_become" in hv:
        d["sudo"] = _truthy(hv["ansible_become"])
    # Plaintext ansible_password values are never used: point guestprep at an env var instead.
    for ours, theirs in (("password_env", "guestprep_password_env"), ("sudo_password_env", "guestprep_sudo_password_env")):
        if hv.get(theirs):
            d[ours] = str(hv[theirs])
    d["vars"].pop("guestprep_password_env", None)
    d["vars"].pop("guestprep_sudo_password_env", None)
    d["vars"].pop("guestprep_os", None)
    return _guest_from(d, path, line, {})


def _load_ansible_yaml(path: Path, doc: dict) -> list[Guest]:
    """Ansible YAML as a graph of groups, each group read once.

    Walking every path of the tree (the old way) expanded YAML aliases that reuse a group
    exponentially (a 1.5 KB file took 48 s) and recursed once per level (20,000 levels:
    RecursionError). Here each group node is visited once (a visited set, iteratively); a
    host's variables then merge its groups in Ansible's order (shallower groups first, then
    by name), then its own host variables.
    """
    group_vars: dict[str, dict[str, Any]] = {}
    parents: dict[str, set[str]] = {}
    depth: dict[str, int] = {}
    hosts: dict[str, dict[str, Any]] = {}
    host_direct: dict[str, list[str]] = {}
    host_line: dict[str, int] = {}
    seen_nodes: set[tuple[str, int]] = set()
    stack: list[tuple[str, Any, int, str | None, int]] = [
        (str(g), d, doc.line_of(g) if isinstance(doc, _Located) else 1, None, 0) for g, d in reversed(list(doc.items()))]
    while stack:
        gname, gdef, line, parent, level = stack.pop()
        if parent is not None and parent != gname:
            parents.setdefault(gname, set()).add(parent)
        depth[gname] = min(depth.get(gname, level), level)
        group_vars.setdefault(gname, {})
        if gdef is None or (gname, id(gdef)) in seen_nodes:
            continue  # the same node again (a YAML alias): its content is already known
        seen_nodes.add((gname, id(gdef)))
        if not isinstance(gdef, dict):
            raise ConfigError(f"group {gname!r} must be a mapping with hosts/children/vars", where=f"{path}:{line}")
        for key in gdef:
            if key not in ("hosts", "children", "vars"):
                raise ConfigError(f"unknown key {key!r} in Ansible group {gname!r} (hosts, children, vars)",
                                  where=f"{path}:{gdef.line_of(key) if isinstance(gdef, _Located) else line}")
        gv, hs, ch = gdef.get("vars") or {}, gdef.get("hosts") or {}, gdef.get("children") or {}
        for what, val in (("vars", gv), ("hosts", hs), ("children", ch)):
            if not isinstance(val, dict):
                raise ConfigError(f"group {gname!r}: {what!r} must be a mapping",
                                  where=f"{path}:{gdef.line_of(what) if isinstance(gdef, _Located) else line}")
        group_vars[gname].update({str(k): v for k, v in gv.items()})
        for host, hv in hs.items():
            hl = hs.line_of(host) if isinstance(hs, _Located) else line
            hv = hv or {}
            if not isinstance(hv, dict):
                raise ConfigError(f"host {host!r} vars must be a mapping", where=f"{path}:{hl}")
            host = str(host)
            hosts[host] = {**hosts.get(host, {}), **{str(k): v for k, v in hv.items()}}
            direct = host_direct.setdefault(host, [])
            if gname not in direct:
                direct.append(gname)
            host_line.setdefault(host, hl)
        for child, cdef in reversed(list(ch.items())):  # reversed: popped in file order
            cl = ch.line_of(child) if isinstance(ch, _Located) else line
            stack.append((str(child), cdef, cl, gname, level + 1))

    guests = []
    for host, hv in hosts.items():
        groups = _with_ancestors(host_direct[host], parents)
        merged: dict[str, Any] = {}
        for g in sorted(set(groups) | {"all"} & set(group_vars), key=lambda g: (depth.get(g, 0), g)):
            merged.update(group_vars.get(g, {}))
        merged.update(hv)
        guests.append(_from_ansible(host, merged, [g for g in groups if g not in ("all", "ungrouped")],
                                    path, host_line[host]))
    return guests


def _with_ancestors(direct: list[str], parents: dict[str, set[str]]) -> list[str]:
    """``direct`` then every group above them, each once (iterative: no recursion limit, cycles end)."""
    out: list[str] = []
    seen: set[str] = set()
    queue = list(direct)
    while queue:
        g = queue.pop(0)
        if g in seen:
            continue
        seen.add(g)
        out.append(g)
        queue.extend(sorted(parents.get(g, ())))
    return out


def _load_ansible_ini(path: Path, text: str) -> list[Guest]:
    hosts: dict[str, dict[str, Any]] = {}
    host_line: dict[str, int] = {}
    members: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    group_vars: dict[str, dict[str, Any]] = {}
    section, kind = "ungrouped", "hosts"
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(f"malformed section header {line!r}", where=f"{path}:{n}")
            name = line[1:-1].strip()
            section, _, kind = name.partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise ConfigError(f"unknown section kind {kind!r} (vars or children)", where=f"{path}:{n}")
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ConfigError(f"cannot parse line: {exc}", where=f"{path}:{n}") from None
        if kind == "vars":
            k, sep, v = line.partition("=")
            if not sep:
                raise ConfigError(f"expected key=value in [{section}:vars], got {line!r}", where=f"{path}:{n}")
            group_vars.setdefault(section, {})[k.strip()] = _ini_value(v.strip())
        elif kind == "children":
            children.setdefault(section, []).append(tokens[0])
        else:
            host, hv = tokens[0], {}
            if re.search(r"\[[^\]]*:[^\]]*\]", host):
                raise ConfigError(f"host ranges ({host}) are not supported; list hosts explicitly", where=f"{path}:{n}")
            for tok in tokens[1:]:
                k, sep, v = tok.partition("=")
                if not sep:
                    raise ConfigError(f"expected key=value after host {host!r}, got {tok!r}", where=f"{path}:{n}")
                hv[k] = _ini_value(v)
            hosts.setdefault(host, {}).update(hv)
            host_line.setdefault(host, n)
            members.setdefault(section, []).append(host)
    # groups a host belongs to, following :children transitively (each group once)
    parents: dict[str, set[str]] = {}
    for parent, kids in children.items():
        for kid in kids:
            parents.setdefault(kid, set()).add(parent)
    direct: dict[str, list[str]] = {}
    for g, hs in members.items():
        for h in hs:
            if g not in direct.setdefault(h, []):
                direct[h].append(g)

    guests = []
    for host, hv in hosts.items():
        groups = _with_ancestors(direct.get(host, []), parents)
        merged: dict[str, Any] = dict(group_vars.get("all", {}))
        for g in reversed(groups):  # parents first, own group last wins
            merged.update(group_vars.get(g, {}))
        merged.update(hv)
        guests.append(_from_ansible(host, merged, [g for g in groups if g not in ("all", "ungrouped")],
                                    path, host_line[host]))
    return guests


def _ini_value(v: str) -> Any:
    if v.lower() in ("true", "yes"):
        return True
    if v.lower() in ("false", "no"):
        return False
    if re.fullmatch(r"\d+", v):
        return int(v)
    return v.strip("'\"")


def check_secret_refs(guests: Iterable[Guest]) -> None:
    """Every environment variable the selected guests name for a secret is set.

    Checked before any guest is touched, so a typo is bad input (exit 2, with the inventory
    file:line) rather than one unreachable guest per entry found halfway through a run."""
    import os

    for g in guests:
        c = g.credentials
        for field_name, var in (("password_env", c.password_env), ("key_passphrase_env", c.key_passphrase_env),
                                ("sudo_password_env", c.sudo_password_env)):
            if var and os.environ.get(var) is None:
                raise ConfigError(f"environment variable {var} ({field_name} of guest {g.name}) is not set",
                                  where=g.source)


def local_guest() -> Guest:
    import socket

    name = re.sub(r"[^A-Za-z0-9._@-]", "-", socket.gethostname()) or "localhost"
    return Guest(name=name, address="localhost", transport=Transport.LOCAL, os=OSFamily.LINUX, origin="--local")


# --------------------------------------------------------------------------- selecting guests for a run

ADHOC_RE = re.compile(r"(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:@\s]+)(?::(?P<port>\d+))?")  # fullmatch


def select_guests(names: list[str], inventory_file: str | Path | None, local: bool) -> list[Guest]:
    """Guests from --local, an inventory (filtered by NAME globs), or ad-hoc [user@]host[:port] targets."""
    import fnmatch

    if local:
        if inventory_file or names:
            raise ConfigError("--local audits this machine; do not combine it with an inventory or guest names",
                              where="--local")
        return [local_guest()]
    if inventory_file:
        guests = load(inventory_file)
        chosen = [g for g in guests if not names or any(fnmatch.fnmatchcase(g.name, n) or n in g.groups for n in names)]
        missing = [n for n in names if not any(fnmatch.fnmatchcase(g.name, n) or n in g.groups for g in guests)]
        if missing:
            raise ConfigError(f"no guest or group named {', '.join(missing)} in the inventory", where=str(inventory_file))
        check_secret_refs(chosen)
        return chosen
    if not names:
        raise ConfigError("name guests with an --inventory file, ad-hoc [user@]host[:port] targets, or use --local",
                          where="arguments")
    chosen = []
    seen: set[str] = set()
    for n in names:
        g = adhoc_guest(n)
        if g.name not in seen:  # the same target twice is one guest (checked once, reported once)
            seen.add(g.name)
            chosen.append(g)
    return chosen


def adhoc_guest(target: str) -> Guest:
    """One SSH guest from ``[user@]host[:port]``, validated like an inventory entry."""
    m = ADHOC_RE.fullmatch(target)
    if not m:
        raise ConfigError(f"{target!r} is not [user@]host[:port]", where="arguments")
    host = m.group("host").strip("[]")
    if not ADDRESS_RE.fullmatch(host):
        raise ConfigError(f"{host!r} is not a host name or IP address", where="arguments")
    user = m.group("user")
    if user is not None and not USER_RE.fullmatch(user):
        raise ConfigError(f"user {user!r} contains characters not allowed in a user name", where="arguments")
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"port {port} out of range", where="arguments")
    # A guest's identity is user, host and port: two ports of one host are two guests
    # ("127.0.0.1:1" and "127.0.0.1:2299"), each named as it was given, stable from run to run.
    name = (f"{user}@" if user else "") + (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    return Guest(name=name, address=host, transport=Transport.SSH, os=OSFamily.AUTO, port=port,
                 credentials=Credentials(user=user), origin="arguments")
