"""Read every VM of a vCenter/ESXi in a constant number of PropertyCollector retrievals.

One ContainerView over the root folder selects VMs and the few objects their facts
refer to (hosts, clusters, folders, datacenters, networks). The fast path reads them in
one small retrieval (the context objects, the VMs' morefs) and then the VMs' properties
in at most four parts that overlap with their reading (:mod:`pipeline`); the pyVmomi
path (``fast=False``) and a given list of VMs take one RetrievePropertiesEx. Each is
continued page by page with ContinueRetrievePropertiesEx. Nothing here makes a round
trip per VM or per property.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any, Iterable, Iterator, Mapping

from pyVmomi import vim, vmodl

from guestprep.errors import ConnectionFailed
from guestprep.models import SourceVM
from guestprep.vsphere import fastscan, pipeline
from guestprep.vsphere.client import TRANSPORT_ERRORS, Session, translate
from guestprep.vsphere.fastmap import to_source_vm  # mapping.to_source_vm, device lists read straight from the XML
from guestprep.vsphere.mapping import Context

VM_PROPERTIES = [
    "name", "config.uuid", "config.instanceUuid", "config.guestId", "config.guestFullName",
    "config.firmware", "config.bootOptions", "config.hardware.numCPU",
    "config.hardware.numCoresPerSocket", "config.hardware.memoryMB", "config.hardware.device",
    "config.cpuHotAddEnabled", "config.memoryHotAddEnabled", "config.changeTrackingEnabled",
    "config.template", "config.cpuAffinity", "snapshot", "runtime.powerState",
    "runtime.consolidationNeeded", "runtime.host", "guest.toolsStatus", "guest.toolsRunningStatus",
    "guest.toolsVersion", "guest.ipAddress", "guest.net", "guest.hostName",
    # Forklift's VMware rules read these too (kubev2v/forklift validation/policies/io/konveyor/forklift/vmware):
    # hot-remove, the Tools OS name, Fault Tolerance, and extraConfig (disk.EnableUUID, numa.nodeAffinity,
    # per-disk ctkEnabled; the mapper keeps only those keys, never guestinfo.*)
    "config.cpuHotRemoveEnabled", "guest.guestFullName", "config.ftInfo", "config.extraConfig",
]
OTHER_PROPERTIES: dict[type, list[str]] = {
    vim.HostSystem: ["name", "parent", "config.network.portgroup"],
    vim.ClusterComputeResource: ["name", "parent", "configurationEx"],
    vim.ComputeResource: ["name", "parent"],
    vim.Folder: ["name", "parent"],
    vim.Datacenter: ["name", "parent"],
    vim.Network: ["name"],
    vim.dvs.DistributedVirtualPortgroup: ["name", "key", "config.defaultPortConfig"],
}
DEFAULT_PAGE_SIZE = 500
_VM = vim.VirtualMachine  # pyVmomi resolves a type on every attribute access of `vim`: once per object is measurable


def _filter_spec(view: Any, vms: list[Any] | None,
                 vm_paths: list[str] = VM_PROPERTIES) -> vmodl.query.PropertyCollector.FilterSpec:
    PC = vmodl.query.PropertyCollector
    traverse = PC.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
    prop_specs = [PC.PropertySpec(type=vim.VirtualMachine, pathSet=vm_paths)]
    prop_specs += [PC.PropertySpec(type=t, pathSet=p) for t, p in OTHER_PROPERTIES.items()]
    objects = [PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])]
    objects += [PC.ObjectSpec(obj=vm, skip=False) for vm in vms or []]
    return PC.FilterSpec(objectSet=objects, propSet=prop_specs, reportMissingObjectsInResults=False)


def _vm_spec(vm: Any) -> vmodl.query.PropertyCollector.FilterSpec:
    """One VM's properties, nothing else: the filter each part of the fleet repeats per VM. A VM
    removed since it was named is omitted from the result rather than failing the whole part (the
    API's recommended setting for transient objects; PropertyFilterSpec.reportMissingObjectsInResults)."""
    PC = vmodl.query.PropertyCollector
    return PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vm, skip=False)],
                         propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=VM_PROPERTIES)],
                         reportMissingObjectsInResults=True)


def retrieve(session: Session | Any, *, page_size: int = DEFAULT_PAGE_SIZE,
             vms: list[Any] | None = None, fast: bool = True) -> Iterator[Any]:
    """Yield every ObjectContent of the retrieval, following continuation tokens.

    With ``vms`` the view holds only the small context types and the given VMs are added
    as objects of their own: one retrieval, without reading the whole fleet. The whole
    fleet, fast, is read by :func:`pipeline.retrieve_fleet` (constant calls, overlapped).
    ``fast`` parses the answers with :mod:`guestprep.vsphere.fastscan` (same records,
    ~10x less CPU than pyVmomi's deserializer); ``fast=False`` uses pyVmomi throughout.
    """
    si = getattr(session, "si", session)
    content = service_content(si)
    types = ([] if vms is not None else [vim.VirtualMachine]) + list(OTHER_PROPERTIES)
    view = content.viewManager.CreateContainerView(content.rootFolder, types, True)
    pc = content.propertyCollector
    try:
        options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=page_size)
        if fast and vms is None:  # the whole fleet: named first, then read in parts that overlap (pipeline)
            yield from pipeline.retrieve_fleet(pc, _filter_spec(view, None, vm_paths=[]), _vm_spec, options)
            return
        if fast:
            result = fastscan.retrieve_properties_ex(pc, [_filter_spec(view, vms)], options)
        else:
            result = pc.RetrievePropertiesEx([_filter_spec(view, vms)], options)
        yield from pipeline.pages(pc, result, fast=fast)
    finally:
        try:
            view.DestroyView()
        except Exception:  # the session may be gone already; the view dies with it
            pass


_contents: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def service_content(si: Any) -> Any:
    """The session's ServiceContent (the root folder, view manager, property collector): fixed for
    the life of the connection, so asked once per connection rather than once per retrieval."""
    stub = getattr(si, "_stub", None)
    try:
        found = _contents.get(stub) if stub is not None else None
    except TypeError:  # a stub that cannot be weakly referenced: ask every time
        found = None
    if found is None:
        found = si.RetrieveContent()
        try:
            _contents[stub] = found
        except TypeError:
            pass
    return found


def _vlan_of(port_config: Any) -> int | None:
    vlan = getattr(port_config, "vlan", None)
    vid = getattr(vlan, "vlanId", None)
    return vid if isinstance(vid, int) else None  # trunk ranges have no single VLAN


def fetch_one(session: Session | Any, vm: Any, *, where: str = "vsphere") -> SourceVM:
    """One VM's facts (``vm`` is a vim.VirtualMachine), mapped exactly like :func:`fetch_all`."""
    found = fetch_all(session, where=where, vms=[vm])
    if not found:
        raise ConnectionFailed(f"VM {vm._moId} disappeared while being read", where=where)
    return found[0]


def fetch_all(session: Session | Any, *, page_size: int = DEFAULT_PAGE_SIZE,
              where: str = "vsphere", vms: list[Any] | None = None, fast: bool = True) -> list[SourceVM]:
    """All VMs (or just ``vms``) as ``SourceVM`` records, sorted by name then moref."""
    paused = gc.isenabled()
    if paused:  # ~10 objects per VM, all kept: collections would only walk them (and pyVmomi's tables) again
        gc.disable()
    try:
        # the parts of the fast whole-fleet path come after every context object: each VM is mapped as
        # its part arrives, while the server builds the next part
        return source_vms(retrieve(session, page_size=page_size, vms=vms, fast=fast),
                          context_first=fast and vms is None)
    except vim.fault.NotAuthenticated as exc:
        raise translate(exc, where) from None
    except TRANSPORT_ERRORS as exc:
        raise translate(exc, where) from None
    except vmodl.MethodFault as exc:
        raise ConnectionFailed(f"vCenter refused the inventory query: {exc.msg or type(exc).__name__}",
                               where=where) from None
    finally:
        if paused:
            gc.enable()


def source_vms(objects: Iterable[Any], *, context_first: bool = False) -> list[SourceVM]:
    """The VMs of one retrieval's ObjectContents (pyVmomi objects or fastsoap records alike), each
    mapped once every object it refers to (host, cluster, folder, network) is known: at the end, or,
    with ``context_first`` (the context objects come before any VM), as it arrives. A context object
    that comes after all has the VMs mapped before it mapped again: the result is the same either way."""
    ctx = Context()
    found: list[tuple[str, Mapping[str, Any]]] = []
    mapped: list[SourceVM | None] = []
    early = 0  # found[:early] were mapped before the last context object came
    for obj in objects:
        if isinstance(obj, fastscan.RawObject):
            props: Mapping[str, Any] = obj.props  # decoded as read; fastmap reads the devices raw
        else:
            props = {p.name: p.val for p in obj.propSet or []}
        if isinstance(obj.obj, _VM):
            ref = obj.obj._moId
            found.append((ref, props))
            mapped.append(to_source_vm(ref, props, ctx) if context_first else None)
        else:
            add_context(ctx, obj.obj, props)
            if context_first:
                early = len(found)
    out = [to_source_vm(ref, props, ctx) if vm is None or i < early else vm
           for i, ((ref, props), vm) in enumerate(zip(found, mapped))]
    return sorted(out, key=lambda v: (v.name, v.moref or ""))


def add_context(ctx: Context, obj: Any, props: Mapping[str, Any]) -> None:
    """Remember a host, cluster, folder, datacenter or network of the retrieval for the VMs' mapping."""
    ref = obj._moId
    if isinstance(obj, vim.HostSystem):
        ctx.hosts[ref] = {"name": props.get("name"), "parent": _ref(props.get("parent"))}
        ctx.host_vlans[ref] = {pg.spec.name: pg.spec.vlanId
                               for pg in props.get("config.network.portgroup") or [] if pg.spec}
    elif isinstance(obj, vim.ComputeResource):  # clusters are ComputeResources too
        cfg = props.get("configurationEx")
        ctx.computes[ref] = {"name": props.get("name"), "parent": _ref(props.get("parent")),
                             "cluster": isinstance(obj, vim.ClusterComputeResource),
                             "rules": list(getattr(cfg, "rule", None) or []),
                             "groups": list(getattr(cfg, "group", None) or []),
                             "drs": _enabled(cfg, "drsConfig"), "dpm": _enabled(cfg, "dpmConfigInfo"),
                             "ha": _enabled(cfg, "dasConfig")}
    elif isinstance(obj, vim.Folder):
        ctx.folders[ref] = {"name": props.get("name"), "parent": _ref(props.get("parent"))}
    elif isinstance(obj, vim.Datacenter):
        ctx.datacenters[ref] = {"name": props.get("name"), "parent": _ref(props.get("parent"))}
    elif isinstance(obj, vim.dvs.DistributedVirtualPortgroup):
        ctx.dvportgroups[props.get("key") or ref] = {
            "name": props.get("name"), "vlan": _vlan_of(props.get("config.defaultPortConfig"))}
        ctx.networks[ref] = props.get("name") or ref
    elif isinstance(obj, vim.Network):
        ctx.networks[ref] = props.get("name") or ref


def _enabled(cfg: Any, part: str) -> bool:
    """A cluster service switch of ClusterConfigInfoEx (drsConfig, dpmConfigInfo, dasConfig)."""
    return bool(getattr(getattr(cfg, part, None), "enabled", False))


def _ref(obj: Any) -> str | None:
    return obj._moId if obj is not None and hasattr(obj, "_moId") else None
