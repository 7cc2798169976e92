"""A Windows Server 2019 VM for the cutover tests: the simulator VM reshaped as one, its guest
answered over WinRM by the suite's WS-Management test server (tests/windows/wsman_server), and the
coexistence disk attached by guestprep's own `vm coexist attach` before the wave is planned.

The WS-Man fixtures are tests/windows/conftest.py's, imported by the test module (a conftest's
fixtures are only visible under its own directory)."""

from __future__ import annotations

import copy
import json

from tests.cutover.conftest import Lab, own_mac
from tests.windows.conftest import PW_ENV, USER
from tests.windows.wsman_server.guest import load_profile

GUEST_ID = "windows2019srv_64Guest"
# the ws2019-en-US profile's first adapter (tests/windows/guests/ws2019-en-US.json): the simulated VM
# gets the same MAC and address, so vSphere, the guest and the copy on Proxmox agree
MAC, IP = "00:50:56:9a:10:01", "10.20.0.15"


def ws2019_with_agent() -> dict:
    """ws2019-en-US as after `prepare` installed the QEMU guest agent but with vioscsi NOT boot-start:
    WIN-VIOSCSI-BOOTSTART fails, so a direct VirtIO SCSI boot is not proven and the plan picks
    sata-first (guestprep/finalize/strategy.py); WIN-QEMU-GA passes, so finalize's sata-first waits
    for the agent instead of 180 s of uptime."""
    doc = copy.deepcopy(load_profile("ws2019-en-US"))
    doc["qemu_ga"] = {"installed": True, "state": "Running", "start_mode": "Auto"}
    return doc


def windows_vm(lab_: Lab) -> None:
    """The simulated VM as a Windows Server 2019 guest: guestId, EFI firmware (the profile's), the
    profile's MAC, Tools running with the profile's address."""
    from pyVmomi import vim

    from tests.vsphere.vsphere_support import reconfig, set_guest

    vm = lab_.vm
    if str(vm.runtime.powerState) == "poweredOn":   # firmware changes need the VM off (vSphere rule)
        from guestprep.vsphere.actions import run_task
        run_task(lab_.vs, f"test power off {vm.name}", vm.PowerOffVM_Task)
    reconfig(lab_.vs, vm, vim.vm.ConfigSpec(firmware="efi"))
    # the Debian govmomi simulator validates guestId against a list older than vSphere 7
    # (simulator/guest_id.go has no windows2019srv_64Guest): its documented SET.<property> extraConfig
    # (simulator/virtual_machine.go applyExtraConfig) sets the property as vCenter 7+ reports it
    set_guest_props = {"config.guestId": GUEST_ID, "summary.config.guestId": GUEST_ID,
                       "config.guestFullName": "Microsoft Windows Server 2019 (64-bit)",
                       "summary.config.guestFullName": "Microsoft Windows Server 2019 (64-bit)"}
    reconfig(lab_.vs, vm, vim.vm.ConfigSpec(extraConfig=[
        vim.option.OptionValue(key=f"SET.{k}", value=v) for k, v in set_guest_props.items()]))
    own_mac(lab_.vs, vm, MAC)
    from guestprep.vsphere.actions import power_on
    power_on(lab_.vs, vm)
    set_guest(lab_.vs, vm, toolsRunningStatus="guestToolsRunning", ipAddress=IP, guestId=GUEST_ID)
    lab_.mac, lab_.ip = MAC, IP
    lab_.pve.state.faults.guest_addresses.clear()
    lab_.pve.state.faults.guest_addresses[MAC] = [IP]   # what the copy's agent will report


def winrm_inventory(lab_: Lab, running) -> None:
    """The fleet entry of the VM: WinRM over HTTPS (NTLM) to the WS-Man test server, its CA trusted
    through the entry's own ansible_winrm_ca_trust_path (as tests/windows/test_cli_e2e.py does)."""
    moref = json.loads(lab_.fleet.read_text())["guests"][0]["vars"]["vsphere_moref"]
    lab_.fleet.write_text(json.dumps({"guests": [{
        "name": lab_.vm_name, "address": "127.0.0.1", "port": running.server.https.port, "transport": "winrm",
        "os": "windows", "user": USER, "password_env": PW_ENV,
        "vars": {"vsphere_moref": moref, "ansible_winrm_ca_trust_path": str(running.pki.ca_cert),
                 "ansible_winrm_transport": "ntlm", "ansible_winrm_operation_timeout_sec": 2,
                 "ansible_winrm_read_timeout_sec": 10}}]}))


def set_policy(lab_: Lab, **cutover_options) -> None:
    policy = json.loads(lab_.policy.read_text())
    policy.pop("strategy", None)          # no strategy: the plan decides it from the guest's evidence
    policy["expect_addresses"] = [IP]
    policy["cutover"]["options"] = cutover_options
    lab_.policy.write_text(json.dumps(policy))


def coexist_attach(lab_: Lab):
    """`guestprep vm coexist attach VM --apply`, as the operator runs it before preparing the guest."""
    r = lab_.gp("vm", "coexist", "attach", lab_.vm_name, "--apply", "--size-mib", "8",
                "--server", lab_.sim.server, "--user", lab_.sim.user, "--ca-bundle", lab_.sim.certs.ca_pem)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def coexist_disks(lab_: Lab) -> list[str]:
    """The coexistence disks on the simulated VM now, read through the vSphere API (not guestprep)."""
    from pyVmomi import vim

    from guestprep.vsphere.coexist import is_marker_file

    return [d.backing.fileName for d in lab_.vm.config.hardware.device
            if isinstance(d, vim.vm.device.VirtualDisk) and is_marker_file(d.backing.fileName)]


def make_windows_lab(lab, running, vm_name: str, vmid: int, **cutover_options) -> Lab:
    lab_ = lab(vm_name, vmid, IP)
    windows_vm(lab_)
    winrm_inventory(lab_, running)
    set_policy(lab_, **cutover_options)
    coexist_attach(lab_)
    assert coexist_disks(lab_), "guestprep vm coexist attach left no coexistence disk"
    return lab_


def datastore_files(lab_: Lab, path: str) -> list[str]:
    """The files beside ``path`` ("[ds] dir/file") on the simulator's datastore, listed through the vSphere
    API's HostDatastoreBrowser.SearchDatastore_Task (what the vSphere Client's datastore browser uses)."""
    from pyVmomi import vim

    from guestprep.vsphere.actions import run_task

    ds_name, rel = path[1:].split("] ", 1)
    ds = next(d for d in lab_.vm.datastore if d.name == ds_name)
    folder = f"[{ds_name}] {rel.rsplit('/', 1)[0]}"
    res = run_task(lab_.vs, f"browse {folder}", lambda: ds.browser.SearchDatastore_Task(
        datastorePath=folder, searchSpec=vim.host.DatastoreBrowser.SearchSpec(matchPattern=["*"])))
    return sorted(f.path for f in res.file or [])
