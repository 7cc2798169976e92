"""Read a whole fleet in a few parts, the next part on the wire while this one is read.

One RetrievePropertiesEx of every VM leaves the two sides idle in turn: the server builds
the whole answer before sending its first byte (vcsim encodes it into a buffer first, govmomi
simulator.go ServeSDK: ~0.2 s for 1,000 VMs here), then the client reads it (~0.2 s). Here a first, small
retrieval reads the context objects (hosts, clusters, folders, networks) and names the
VMs; the VMs' properties are then asked for in at most ``PARTS`` parts, each sent by a
worker thread on its own connection of the session's pool while the main thread reads the
part before it: the server's work and ours overlap. The number of calls stays constant
whatever the fleet's size (1 + ``PARTS``, plus continuation pages), and every part still
follows its continuation tokens (``RetrieveOptions.maxObjects`` is a maximum the server
may lower; vSphere Web Services API, PropertyCollector.RetrievePropertiesEx).

A VM removed between the two retrievals is left out of its part (the part's filter sets
``reportMissingObjectsInResults``: "in a RetrieveResult missing objects will simply be omitted",
PropertyFilterSpec), as it would be from one retrieval a moment later; one created in between
is not read, as with one retrieval a moment earlier.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator
from xml.sax.saxutils import escape

from pyVmomi import vim

from guestprep.vsphere import fastscan, fastsoap

PARTS = 4        # parts of the VMs' retrieval; with AHEAD in flight, the server builds one while we read one
AHEAD = 2        # requests in flight at once: one part being read here, the next being built there
MIN_PART = 100   # VMs per part at least: below that, one more round trip costs more than the overlap gains
_PLACEHOLDER = "guestprep-part-placeholder"
_VM = vim.VirtualMachine


def pages(pc: Any, result: Any, fast: bool = True) -> Iterator[Any]:
    """Every ObjectContent of a retrieval's result and of the pages its tokens continue to (read
    by fastscan, or by pyVmomi with ``fast=False``)."""
    while result is not None:
        yield from result.objects or []
        if not result.token:
            return
        if fast:
            result = fastscan.continue_retrieve_properties_ex(pc, result.token)
        else:
            result = pc.ContinueRetrievePropertiesEx(result.token)


def split(refs: list[str], parts: int | None = None, min_part: int | None = None) -> list[list[str]]:
    """``refs`` in at most ``parts`` (PARTS) contiguous parts of at least ``min_part`` (MIN_PART) each,
    unless there is a single part; sizes within one of each other."""
    if not refs:
        return []
    parts = PARTS if parts is None else parts
    min_part = MIN_PART if min_part is None else min_part
    count = max(1, min(parts, len(refs) // min_part))
    size, extra = divmod(len(refs), count)
    out, at = [], 0
    for i in range(count):
        n = size + (1 if i < extra else 0)
        out.append(refs[at:at + n])
        at += n
    return out


def part_requests(pc: Any, spec_for: Callable[[Any], Any], options: Any,
                  parts: list[list[str]]) -> tuple[Any, list[bytes]]:
    """One serialized RetrievePropertiesEx per part: pyVmomi serializes the filter for one
    placeholder VM (envelope, version, property paths exactly as for any call), and its
    ObjectSpec is repeated for each VM of the part, the moref escaped as XML text. Serializing
    1,000 ObjectSpecs through pyVmomi would cost more than the overlap gains."""
    stub = pc._stub
    info = type(pc)._GetMethodInfo("RetrievePropertiesEx")
    req = stub.SerializeRequest(pc, info, ([spec_for(_VM(_PLACEHOLDER, stub))], options))
    mark = b">" + _PLACEHOLDER.encode() + b"</obj>"
    at = req.find(mark)
    start = req.rfind(b"<objectSet>", 0, at)
    end = req.find(b"</objectSet>", at)
    if at < 0 or start < 0 or end < 0 or req.count(_PLACEHOLDER.encode()) != 1:  # another pyVmomi's shape
        return info, [stub.SerializeRequest(pc, info, ([_spec_of(pc, spec_for, part)], options)) for part in parts]
    end += len(b"</objectSet>")
    before, after = req[start:end].split(_PLACEHOLDER.encode())
    head, tail = req[:start], req[end:]
    return info, [head + b"".join(before + escape(ref).encode() + after for ref in part) + tail
                  for part in parts]


def _spec_of(pc: Any, spec_for: Callable[[Any], Any], refs: list[str]) -> Any:
    """The filter of one part built whole by pyVmomi (slow for many VMs: the fallback)."""
    vms = [_VM(ref, pc._stub) for ref in refs]
    spec = spec_for(vms[0])
    template = spec.objectSet[0]
    spec.objectSet = [type(template)(obj=vm, skip=template.skip) for vm in vms]
    return spec


def retrieve_fleet(pc: Any, first_spec: Any, spec_for: Callable[[Any], Any], options: Any) -> Iterator[Any]:
    """Every ObjectContent of the fleet: ``first_spec`` (the view, the VMs without properties, the
    context types with theirs), then the VMs in parts, each with ``spec_for(vm)``'s properties."""
    refs: list[str] = []
    for obj in pages(pc, fastscan.retrieve_properties_ex(pc, [first_spec], options)):
        if isinstance(obj.obj, _VM):
            refs.append(obj.obj._moId)
        else:
            yield obj
    parts = split(refs)
    if not parts:
        return
    info, requests = part_requests(pc, spec_for, options, parts)
    if len(requests) == 1:  # nothing to overlap with: no thread
        yield from pages(pc, fastscan.retrieve_result(fastsoap.post_raw(pc._stub, info, requests[0])))
        return
    sent = [_Part(pc._stub, info, req) for req in requests]
    for part in sent[:AHEAD]:
        part.start()
    try:
        for i, part in enumerate(sent):
            body = part.result()
            if i + AHEAD < len(sent):
                sent[i + AHEAD].start()  # on the wire while this part is read
            yield from pages(pc, fastscan.retrieve_result(body))
    except Exception:
        for part in sent:  # a failed inventory leaves no request running behind it (bounded: Ctrl-C is not)
            if part.ident is not None:  # a part never started has nothing to wait for (join would raise)
                part.join(LINGER)
        raise


LINGER = 10.0  # seconds a failed inventory waits for its other parts' requests to end


class _Part(threading.Thread):
    """One part's request, posted on a connection of the session's pool. A daemon: Ctrl-C during
    an inventory of a hung server ends the process without waiting for its socket timeout."""

    def __init__(self, stub: Any, info: Any, req: bytes):
        super().__init__(name="guestprep-inventory-part", daemon=True)
        self._args = (stub, info, req)
        self._body: bytes | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._body = fastsoap.post_raw(*self._args)
        except BaseException as exc:  # handed to the reader, raised there
            self._error = exc

    def result(self) -> bytes | None:
        self.join()
        if self._error is not None:
            raise self._error
        return self._body
