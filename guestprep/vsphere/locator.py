"""Disk locators: where each disk's bytes are, and how to stream them over HTTPS.

vSphere serves datastore files at ``https://HOST/folder/<path>?dcPath=<dc>&dsName=<ds>``
to a client that presents the SOAP session cookie. The host-side converter reads the
flat extent from there directly, with no staging copy. The cookie is a credential: it is
written only to files created with mode 0600 and never printed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from guestprep.errors import ConfigError
from guestprep.models import SourceVM, parse_datastore_path

def split_datastore_path(path: str) -> tuple[str, str]:
    parsed = parse_datastore_path(path)
    if parsed is None:
        raise ConfigError(f"not a datastore path: {path!r} (expected '[datastore] dir/file.vmdk')")
    return parsed


def folder_url(host: str, port: int, dc_path: str, datastore: str, rel: str) -> str:
    netloc = f"[{host}]" if ":" in host else host
    if port != 443:
        netloc += f":{port}"
    return (f"https://{netloc}/folder/{quote(rel, safe='/')}?"
            + urlencode({"dcPath": dc_path, "dsName": datastore}, quote_via=quote))


def flat_extent(rel: str) -> str:
    """``dir/vm.vmdk`` -> ``dir/vm-flat.vmdk`` (the monolithic-flat data file of a VMFS disk)."""
    return rel[:-5] + "-flat.vmdk" if rel.endswith(".vmdk") else rel


def cookie_header(raw_cookie: str) -> str:
    """``vmware_soap_session="x"; Path=/; HttpOnly`` -> ``vmware_soap_session="x"``."""
    return (raw_cookie or "").split(";", 1)[0].strip()


def locate(vm: SourceVM, host: str, port: int, cookie: str | None = None) -> dict[str, Any]:
    dc_path = vm.extra.get("datacenter_path") or vm.datacenter
    if not dc_path:
        raise ConfigError("datacenter unknown: cannot build datastore URLs", where=vm.name)
    disks = []
    for d in vm.disks:
        entry: dict[str, Any] = {"key": d.key, "label": d.label, "datastore_path": d.datastore_path,
                                 "capacity_bytes": d.capacity_bytes, "boot": d.is_boot, "rdm": d.rdm_mode}
        if d.rdm_mode:
            entry["note"] = "RDM: the data is on a SAN LUN, not in a datastore file"
        else:
            ds, rel = split_datastore_path(d.datastore_path)
            entry.update(datastore=ds, descriptor_url=folder_url(host, port, dc_path, ds, rel),
                         flat_url=folder_url(host, port, dc_path, ds, flat_extent(rel)))
        disks.append(entry)
    doc: dict[str, Any] = {"schema": "guestprep.disk-locators/1", "vm": vm.name, "moref": vm.moref,
                           "datacenter_path": dc_path, "disks": disks}
    if cookie is not None:
        doc["session_cookie"] = cookie_header(cookie)
    return doc
