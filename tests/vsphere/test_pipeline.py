"""The whole fleet read in overlapping parts (guestprep/vsphere/pipeline.py), against the simulator.

The session's simulator has 8 VMs, below one part's minimum, so most tests lower MIN_PART to make
four parts of two: the threaded path then runs against the real server, with its real answers.
"""

from __future__ import annotations

import socket
import threading
import xml.etree.ElementTree as ET

import pytest
from pyVmomi import vim, vmodl

from guestprep.errors import ConnectionFailed
from guestprep.vsphere import fastsoap, inventory, pipeline
from guestprep.vsphere.actions import find_vm, run_task
from guestprep.vsphere.inventory import fetch_all

pytestmark = pytest.mark.integration

PC = vmodl.query.PropertyCollector


@pytest.fixture
def four_parts(monkeypatch):
    monkeypatch.setattr(pipeline, "MIN_PART", 2)


def calls_of(session, monkeypatch) -> list[str]:
    stub = session.si._stub
    calls: list[str] = []
    real = stub.SerializeRequest

    def counting(mo, info, args, *a, **kw):
        calls.append(info.name)
        return real(mo, info, args, *a, **kw)

    monkeypatch.setattr(stub, "SerializeRequest", counting)
    real_post = fastsoap.post_raw

    def posting(stub_, info, req):
        calls.append("post:" + info.name)
        return real_post(stub_, info, req)

    monkeypatch.setattr(fastsoap, "post_raw", posting)
    return calls


@pytest.mark.parametrize("n, parts, sizes", [
    (0, 0, []), (1, 1, [1]), (99, 1, [99]), (199, 1, [199]), (200, 2, [100, 100]),
    (250, 2, [125, 125]), (1000, 4, [250] * 4), (1003, 4, [251, 251, 251, 250]), (100_000, 4, [25_000] * 4),
])
def test_split_is_bounded_and_balanced(n, parts, sizes):
    refs = [f"vm-{i}" for i in range(n)]
    out = pipeline.split(refs)
    assert [len(p) for p in out] == sizes and len(out) == parts
    assert [r for p in out for r in p] == refs  # every VM once, in order


def test_part_request_is_what_pyvmomi_would_send(session):
    """The placeholder's ObjectSpec repeated per VM gives byte for byte pyVmomi's own serialization
    of a filter with those VMs, so the server sees an ordinary request."""
    pc = session.si.RetrieveContent().propertyCollector
    options = PC.RetrieveOptions(maxObjects=500)
    refs = ["vm-1", "vm-2", "vm-1000"]
    info, [req] = pipeline.part_requests(pc, inventory._vm_spec, options, [refs])
    vms = [vim.VirtualMachine(r, pc._stub) for r in refs]
    spec = inventory._vm_spec(vms[0])
    spec.objectSet = [PC.ObjectSpec(obj=vm, skip=False) for vm in vms]
    assert req == pc._stub.SerializeRequest(pc, info, ([spec], options))


def test_part_request_escapes_morefs(session):
    """A moref is XML text: escaped, so the request stays well-formed whatever the server named its
    objects (pyVmomi 8 writes a moref's text unescaped)."""
    pc = session.si.RetrieveContent().propertyCollector
    refs = ["vm-<&>\"'", "vm-]]>", "vm-2"]
    _, [req] = pipeline.part_requests(pc, inventory._vm_spec, PC.RetrieveOptions(), [refs])
    assert [el.text for el in ET.fromstring(req).iter("{urn:vim25}obj")] == refs


def test_parts_read_the_same_fleet_as_one_retrieval(session, four_parts, monkeypatch):
    calls = calls_of(session, monkeypatch)
    parted = {v.name: v.to_dict() for v in fetch_all(session)}
    assert calls.count("post:RetrievePropertiesEx") == 1 + 4, calls  # the naming retrieval, then four parts
    assert len(parted) == 8
    assert parted == {v.name: v.to_dict() for v in fetch_all(session, fast=False)}  # pyVmomi, one retrieval


def test_calls_stay_constant_whatever_the_fleet(session, monkeypatch):
    """Two parts' minimum of one VM, then of two: the fleet is the same, what matters is that a part
    count above PARTS never happens (1,000 VMs make the same number of calls as 8)."""
    for min_part in (1, 2, 4):
        monkeypatch.setattr(pipeline, "MIN_PART", min_part)
        calls = calls_of(session, monkeypatch)
        fetch_all(session)
        assert calls.count("post:RetrievePropertiesEx") == 1 + min(pipeline.PARTS, 8 // min_part), (min_part, calls)
        monkeypatch.undo()


def test_parts_follow_their_continuation_tokens(session, four_parts, monkeypatch):
    """A server that pages (vCenter lowers maxObjects as it likes): every part is read to its end.
    vcsim ignores maxObjects, so its answers are cut here into pages with tokens, as vCenter's are."""
    from guestprep.vsphere import fastscan

    served: dict[str, list] = {}
    real = fastscan.retrieve_result

    def paged(body):
        result = real(body)
        objects = list(result.objects or [])
        if len(objects) <= 1:
            return result
        token = f"t{len(served)}"
        served[token] = objects[1:]
        return fastsoap.Record(PC.RetrieveResult, {"objects": objects[:1], "token": token})

    def cont(pc, token):
        rest = served.pop(token)
        fields = {"objects": rest[:1]}
        if rest[1:]:
            served[token + "+"] = rest[1:]
            fields["token"] = token + "+"
        return fastsoap.Record(PC.RetrieveResult, fields)

    monkeypatch.setattr(fastscan, "retrieve_result", paged)
    monkeypatch.setattr(fastscan, "continue_retrieve_properties_ex", cont)
    got = {v.name: v.to_dict() for v in fetch_all(session)}
    monkeypatch.undo()
    assert not served  # every page asked for
    assert got == {v.name: v.to_dict() for v in fetch_all(session, fast=False)}


@pytest.mark.parametrize("failing_post", [2, 4], ids=["part 1 (parts 3, 4 never sent)", "part 3"])
def test_a_part_that_fails_fails_the_inventory_cleanly(session, four_parts, monkeypatch, failing_post):
    """A connection lost on a part: one clear error, no thread left behind, the session usable."""
    real = fastsoap.post_raw
    seen = []

    def failing(stub, info, req):
        seen.append(1)
        if len(seen) == failing_post:  # post 1 is the naming retrieval
            raise socket.error("connection reset by peer")
        return real(stub, info, req)

    monkeypatch.setattr(fastsoap, "post_raw", failing)
    with pytest.raises(ConnectionFailed) as err:
        fetch_all(session, where="vc.test")
    assert "vc.test" in str(err.value)
    assert not [t for t in threading.enumerate() if t.name.startswith("guestprep-inventory")]
    monkeypatch.undo()
    assert len(fetch_all(session)) == 8


def test_a_vm_removed_between_naming_and_reading_is_left_out(session, four_parts, monkeypatch):
    """The filter does not report missing objects: a VM gone before its part is read is simply absent."""
    source = find_vm(session, "DC0_H0_VM0")
    run_task(session, "clone", lambda: source.CloneVM_Task(folder=source.parent, name="pipeline-victim",
                                                            spec=vim.vm.CloneSpec(location=vim.vm.RelocateSpec())))
    victim = find_vm(session, "pipeline-victim")
    real_split = pipeline.split

    def split_then_remove(refs, *a, **kw):
        assert victim._moId in refs  # named by the first retrieval
        run_task(session, "destroy", victim.Destroy_Task)
        return real_split(refs, *a, **kw)

    monkeypatch.setattr(pipeline, "split", split_then_remove)
    try:
        names = {v.name for v in fetch_all(session)}
    finally:
        monkeypatch.undo()
    assert "pipeline-victim" not in names and len(names) == 8


def test_vms_mapped_as_they_arrive_equal_vms_mapped_at_the_end(session):
    """source_vms maps each VM as it comes when the context comes first; a context object that comes
    late anyway (a host after the VMs on it) has the VMs before it mapped again: same records."""
    objects = list(inventory.retrieve(session, fast=False))
    vms = [o for o in objects if isinstance(o.obj, vim.VirtualMachine)]
    context = [o for o in objects if not isinstance(o.obj, vim.VirtualMachine)]
    at_end = [v.to_dict() for v in inventory.source_vms(objects)]
    assert at_end == [v.to_dict() for v in inventory.source_vms(context + vms, context_first=True)]
    late = vms[:3] + context + vms[3:]  # hosts, clusters and networks after three VMs
    assert at_end == [v.to_dict() for v in inventory.source_vms(late, context_first=True)]
    assert {v["host"] for v in at_end} and all(v["host"] for v in at_end)  # the context mattered


def test_ctrl_c_does_not_wait_for_a_hung_part(session, four_parts, monkeypatch):
    """Interrupted while a part hangs on the server: the interrupt comes through at once (the parts'
    threads are daemons; only an ordinary error waits, briefly, for the requests in flight)."""
    import time

    from guestprep.vsphere import fastscan

    release = threading.Event()
    real_post, real_result = fastsoap.post_raw, fastscan.retrieve_result
    posts = []

    def hanging(stub, info, req):
        posts.append(1)
        if len(posts) == 3:  # part 2 never answers
            release.wait(60)
        return real_post(stub, info, req)

    reads = []

    def interrupted(body):
        reads.append(1)
        if len(reads) == 2:  # reading part 1: the user presses Ctrl-C
            raise KeyboardInterrupt
        return real_result(body)

    monkeypatch.setattr(fastsoap, "post_raw", hanging)
    monkeypatch.setattr(fastscan, "retrieve_result", interrupted)
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            fetch_all(session)
        assert time.monotonic() - t0 < 5
    finally:
        release.set()


def test_an_unexpected_serialization_falls_back_to_pyvmomi_whole(session, monkeypatch):
    """Should another pyVmomi write the filter in a shape the repetition does not expect, each part is
    serialized by pyVmomi whole: slower, the same request."""
    pc = session.si.RetrieveContent().propertyCollector
    options = PC.RetrieveOptions(maxObjects=500)
    refs = [["vm-1", "vm-2"], ["vm-3"]]
    _, expected = pipeline.part_requests(pc, inventory._vm_spec, options, refs)
    # a placeholder that also names the request element: not a unique mark, as another serializer might make it
    monkeypatch.setattr(pipeline, "_PLACEHOLDER", "RetrievePropertiesEx")
    whole = []
    real = pipeline._spec_of
    monkeypatch.setattr(pipeline, "_spec_of", lambda *a: (whole.append(a[2]), real(*a))[1])
    _, fallback = pipeline.part_requests(pc, inventory._vm_spec, options, refs)
    assert whole == refs and fallback == expected
