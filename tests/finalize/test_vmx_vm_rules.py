"""A VM read from a .vmx file carries the issue 18 facts vSphere reads from extraConfig
(hot-remove, disk.EnableUUID, NUMA affinity, per-disk and VM CBT), and the VM checks judge them."""

from __future__ import annotations

from guestprep.checks import registry
from guestprep.vmx import parse_vmx

VMX = """\
.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "db01"
guestOS = "rhel9-64"
memSize = "4096"
numvcpus = "4"
vcpu.hotremove = "TRUE"
disk.EnableUUID = "TRUE"
numa.nodeAffinity = "0, 1"
ctkEnabled = "TRUE"
ftcpt.ftEncryptionMode = "ftEncryptionOpportunistic"
scsi0.present = "TRUE"
scsi0.virtualDev = "pvscsi"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "db01.vmdk"
scsi0:0.ctkEnabled = "TRUE"
scsi0:1.present = "TRUE"
scsi0:1.fileName = "db01_1.vmdk"
scsi0:1.ctkEnabled = "FALSE"
"""


def _statuses(check_id, vm):
    return {f.status.value for f in registry.get(check_id).evaluate(vm, guest=vm.name)}


def test_vmx_keys_become_the_vm_facts():
    vm = parse_vmx(VMX, where="db01.vmx")
    assert vm.cpu_hot_remove is True and vm.disk_enable_uuid is True and vm.cbt_enabled is True
    assert vm.numa_node_affinity == ["0", "1"]
    assert [d.cbt_enabled for d in vm.disks] == [True, False]
    # ftcpt.* keys are written on VMs without Fault Tolerance: not read as FT
    assert vm.fault_tolerance is False


def test_vm_checks_flag_what_the_vmx_says():
    vm = parse_vmx(VMX, where="db01.vmx")
    assert "fail" in _statuses("VM-HOTADD", vm)
    assert "fail" in _statuses("VM-NUMA-AFFINITY", vm)
    cbt = {f.resource: f.status.value for f in registry.get("VM-CBT").evaluate(vm, guest=vm.name)}
    assert cbt["scsi0:1"] == "fail" and cbt["scsi0:0"] == "pass"


def test_a_plain_vmx_has_none_of_them():
    plain = "\n".join(l for l in VMX.splitlines()
                      if not l.startswith(("vcpu.hotremove", "disk.EnableUUID", "numa.", "ctkEnabled", "scsi0:0.ctk",
                                           "scsi0:1.ctk")))
    vm = parse_vmx(plain, where="plain.vmx")
    assert not vm.cpu_hot_remove and not vm.disk_enable_uuid and not vm.numa_node_affinity and not vm.cbt_enabled
    assert [d.cbt_enabled for d in vm.disks] == [None, None]
    assert "fail" not in _statuses("VM-HOTADD", vm)
