"""`guestprep cutover plan|run|resume|status|rollback|rehearse`: a wave of VMs, journaled and resumable.

Thin: parse, call one stage function (guestprep.cutover.*), render. Secrets: the vSphere
password from the environment variable the wave (or --password-env) names, else stdin, else a
prompt; the Proxmox token secret from the environment variable the policy names. Never argv.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from guestprep.commands.options import (
    AcceptOpt, DEFAULT_PASSWORD_ENV, InventoryOpt, KnownHostsOpt, ServerOpt, ThumbOpt, UserOpt, VsphereCaOpt,
    VsphereInsecureOpt, VsphereTimeoutOpt, connect_options,
)
from guestprep.console import make_console, safe
from guestprep.errors import ConfigError

console = make_console()
err = make_console(stderr=True)

cutover_app = typer.Typer(help="Cut VMs over to Proxmox in one journaled, resumable, reversible run.",
                          no_args_is_help=True)

WaveArg = typer.Argument(..., help="The wave file written by `cutover plan`.", dir_okay=False)
ParallelOpt = typer.Option(4, "--parallel", "-p", min=1, max=256, help="VMs in flight at once.")
PerNodeOpt = typer.Option(None, "--per-node", min=1, help="Conversions at once per Proxmox node (default: no limit "
                                                          "below --parallel).")
PerDsOpt = typer.Option(None, "--per-datastore", min=1, help="Conversions at once reading one datastore.")
OnFailureOpt = typer.Option("rollback", "--on-failure",
                            help="After the source went down: rollback (stop and keep the copy, power the source "
                                 "on again) or hold (leave both off for a human).")
HardOpt = typer.Option(False, "--hard-power-off", help="Power the source off hard when the graceful guest shutdown "
                                                       "is impossible or times out. Risks data loss in the guest.")
ShutdownTimeoutOpt = typer.Option(300.0, "--shutdown-timeout", min=1.0, help="Seconds for the guest shutdown.")
AgentTimeoutOpt = typer.Option(600.0, "--agent-timeout", min=1.0, help="Seconds for the copy's guest agent to answer "
                                                                       "with the expected addresses.")
ToolsTimeoutOpt = typer.Option(600.0, "--tools-timeout", min=1.0, help="Rollback: seconds for VMware Tools to run.")
PollOpt = typer.Option(1.0, "--poll", min=0.01, help="Seconds between polls of tasks and the agent.")
ConsoleOpt = typer.Option(False, "--console", help="Watch the copy's serial console on its node (serial0 is added "
                                                   "as a socket if missing): an emergency shell fails verify at "
                                                   "once, with the console's lines as evidence.")
PasswordEnvOpt = typer.Option(None, "--password-env", help="Environment variable with the vSphere password "
                                                          "(default: the wave's, else GUESTPREP_VSPHERE_PASSWORD).")


def _progress(wave, only: Optional[List[str]] = None, title: str = "cutover"):
    """Live table on a terminal, a plain line per event elsewhere (guestprep/commands/cutover_progress.py)."""
    from guestprep.commands.cutover_progress import WaveProgress

    return WaveProgress([(v.name, v.node) for v in wave.vms if not only or v.name in only], console=err, title=title)


def _secrets(wave, password_env: Optional[str]):
    from guestprep.commands.vsphere_login import vsphere_password
    from guestprep.cutover.sides import Secrets

    env = password_env or wave.vsphere.get("password_env") or DEFAULT_PASSWORD_ENV
    return Secrets(vsphere_password=vsphere_password(env))


def _options(on_failure: str, hard: bool, shutdown_timeout: float, agent_timeout: float, tools_timeout: float,
             poll: float, accept_new_host_keys: bool, console: bool = False):
    from guestprep.cutover.steps import RunOptions

    if on_failure not in ("rollback", "hold"):
        raise ConfigError(f"must be rollback or hold, got {on_failure!r}", where="--on-failure")
    return RunOptions(on_failure=on_failure, hard_power_off=hard, shutdown_timeout=shutdown_timeout,
                      agent_timeout=agent_timeout, tools_timeout=tools_timeout, poll=poll,
                      accept_new_host_keys=accept_new_host_keys, console=console)


def _show(result) -> int:
    for vm, phase in result.phases.items():
        style = "green" if phase == "done" else "yellow" if phase in ("rolled_back", "held") else "red"
        console.print(f"{safe(vm)}: [{style}]{safe(phase)}[/]")
    err.print("report: " + ", ".join(safe(f) for f in result.report_files))
    return result.exit_code


@cutover_app.command("plan")
def plan(
    vms: List[str] = typer.Argument(None, help="VM/guest names or globs from the inventory (default: all)."),
    inventory_file: Path = InventoryOpt,
    policy: Path = typer.Option(..., "--policy", help="Target policy YAML with a cutover: section.", dir_okay=False),
    out: Path = typer.Option(..., "--out", "-o", help="The wave file to create (never overwritten).", dir_okay=False),
    waivers_file: Optional[Path] = typer.Option(None, "--waivers", help="Waivers YAML for the gate (reason, expiry)."),
    parallel: int = typer.Option(16, "--parallel", "-p", min=1, max=1024, help="Guests checked at once."),
    guest_timeout: float = typer.Option(300.0, "--guest-timeout", min=1.0, help="Per-guest preflight timeout."),
    accept_new_host_keys: bool = AcceptOpt, known_hosts: Optional[Path] = KnownHostsOpt,
    server: str = ServerOpt, user: str = UserOpt,
    password_env: str = typer.Option(DEFAULT_PASSWORD_ENV, "--password-env",
                                     help="Environment variable with the vSphere password (else stdin, else a prompt)."),
    ca_bundle: Optional[Path] = VsphereCaOpt, thumbprint: Optional[str] = ThumbOpt,
    insecure: bool = VsphereInsecureOpt, timeout: float = VsphereTimeoutOpt,
) -> int:
    """Plan a wave: fresh preflight gate, VM read from vCenter, hand-offs, targets, steps."""
    from guestprep.commands.vsphere_login import open_session
    from guestprep.cutover.planner import load_policy, plan_wave

    if inventory_file is None:
        raise ConfigError("an inventory is required (-i fleet.yaml)", where="--inventory")
    if out.exists():
        raise ConfigError("already exists; a wave is planned once (write a new file)", where=str(out))
    load_policy(policy)  # bad policy: exit 2 before vCenter or any guest is asked
    session = open_session(server, user, password_env, ca_bundle, thumbprint, insecure, timeout)
    try:
        doc = plan_wave(inventory_file=inventory_file, policy_file=policy, names=vms or [], out=out, session=session,
                        vsphere={"server": server, "user": user, "password_env": password_env,
                                 "ca_bundle": str(ca_bundle.resolve()) if ca_bundle else None,
                                 "thumbprint": thumbprint, "insecure": insecure, "timeout": timeout},
                        connect_options=connect_options(guest_timeout, accept_new_host_keys, known_hosts, False, None),
                        waivers_file=waivers_file, parallel=parallel, timeout=guest_timeout)
    finally:
        session.close()
    for vm in doc["vms"]:
        t = vm["target"]
        console.print(f"{safe(vm['name'])}: gate {safe(vm['gate']['verdict'])}, prepare "
                      f"{'verified' if vm['prepare_verified'] else 'NOT verified'} -> {safe(t['node'])} vmid "
                      f"{t['vmid']} on {safe(t['storage'])} ({safe(t['strategy'])}), {len(vm['disks'])} disk(s)")
    console.print(f"wave written to {safe(out)}: review it, then `guestprep cutover run {safe(out)}`")
    return 0


def _run(wave_file: Path, *, resume: bool, parallel: int, per_node, per_datastore, options, password_env) -> int:
    from guestprep.cutover import controller, wave as wave_mod
    from guestprep.cutover.steps import Limits

    wave = wave_mod.load(wave_file)
    secrets = _secrets(wave, password_env)
    with _progress(wave) as progress:
        result = controller.run_wave(wave, secrets, options, parallel=parallel,
                                     limits=Limits(per_node=per_node, per_datastore=per_datastore), resume=resume,
                                     events=progress.event)
    return _show(result)


@cutover_app.command("run")
def run(
    wave_file: Path = WaveArg, parallel: int = ParallelOpt, per_node: Optional[int] = PerNodeOpt,
    per_datastore: Optional[int] = PerDsOpt, on_failure: str = OnFailureOpt, hard: bool = HardOpt,
    shutdown_timeout: float = ShutdownTimeoutOpt, agent_timeout: float = AgentTimeoutOpt,
    tools_timeout: float = ToolsTimeoutOpt, poll: float = PollOpt, password_env: Optional[str] = PasswordEnvOpt,
    accept_new_host_keys: bool = AcceptOpt, console_: bool = ConsoleOpt,
) -> int:
    """Run a planned wave: every VM to done, or to a safe, recorded state."""
    return _run(wave_file, resume=False, parallel=parallel, per_node=per_node, per_datastore=per_datastore,
                options=_options(on_failure, hard, shutdown_timeout, agent_timeout, tools_timeout, poll,
                                 accept_new_host_keys, console_), password_env=password_env)


@cutover_app.command("resume")
def resume(
    wave_file: Path = WaveArg, parallel: int = ParallelOpt, per_node: Optional[int] = PerNodeOpt,
    per_datastore: Optional[int] = PerDsOpt, on_failure: str = OnFailureOpt, hard: bool = HardOpt,
    shutdown_timeout: float = ShutdownTimeoutOpt, agent_timeout: float = AgentTimeoutOpt,
    tools_timeout: float = ToolsTimeoutOpt, poll: float = PollOpt, password_env: Optional[str] = PasswordEnvOpt,
    accept_new_host_keys: bool = AcceptOpt, console_: bool = ConsoleOpt,
) -> int:
    """Continue a wave after the controller stopped: each step re-checks before it acts."""
    return _run(wave_file, resume=True, parallel=parallel, per_node=per_node, per_datastore=per_datastore,
                options=_options(on_failure, hard, shutdown_timeout, agent_timeout, tools_timeout, poll,
                                 accept_new_host_keys, console_), password_env=password_env)


@cutover_app.command("rollback")
def rollback(
    wave_file: Path = WaveArg, vm: str = typer.Argument(..., help="The VM (as named in the wave)."),
    tools_timeout: float = ToolsTimeoutOpt, poll: float = PollOpt, password_env: Optional[str] = PasswordEnvOpt,
    accept_new_host_keys: bool = AcceptOpt,
) -> int:
    """Undo one VM: stop and keep the Proxmox copy, remove the source mark, power the source on."""
    from guestprep.cutover import controller, wave as wave_mod

    wave = wave_mod.load(wave_file)
    wave.vm(vm)
    secrets = _secrets(wave, password_env)
    options = _options("rollback", False, 300.0, 600.0, tools_timeout, poll, accept_new_host_keys)
    with _progress(wave, [vm]) as progress:
        result = controller.rollback_one(wave, vm, secrets, options, events=progress.event)
    _show(result)
    return 0 if result.phases[vm] == "rolled_back" else 1


@cutover_app.command("rehearse")
def rehearse(
    wave_file: Path = WaveArg,
    vms: List[str] = typer.Argument(None, help="VMs of the wave to rehearse (default: all)."),
    parallel: int = ParallelOpt, agent_timeout: float = AgentTimeoutOpt, poll: float = PollOpt,
    console_: bool = typer.Option(False, "--console", help="Also require a login prompt on the copy's serial "
                                                           "console (serial0 socket on the node); an emergency "
                                                           "shell there ends the wait at once."),
    vmid: List[str] = typer.Option(None, "--vmid", help="VM=VMID: the temporary vmid (default: the cluster's next "
                                                        "free one). Repeatable."),
    password_env: Optional[str] = PasswordEnvOpt, accept_new_host_keys: bool = AcceptOpt,
) -> int:
    """Boot a throw-away copy while the source keeps running: would it boot? Then remove every trace.

    Per VM: vSphere snapshot, its base disks converted on the node, a temporary VM (name
    rehearsal-<vm>, tag guestprep-rehearsal, every NIC link_down=1), start, guest agent check;
    then the VM and its volumes destroyed, the snapshot removed. Exit 0 when every VM would boot.

    Journaled in <wave>.rehearsal/journal.sqlite (never the run's journal). After a rehearsal was
    interrupted (the controller killed, the machine down), simply run `cutover rehearse` again: it
    first removes exactly what the interrupted one created (its VM, the volumes it converted, its
    snapshot, its directory on the node), then rehearses; no --resume is needed."""
    from guestprep.cutover import rehearse as rehearse_mod, wave as wave_mod

    wave = wave_mod.load(wave_file)
    names = list(vms or [])
    for n in names:
        wave.vm(n)
    vmids: dict[str, int] = {}
    for item in vmid or []:
        name, sep, num = item.partition("=")
        if not sep or not num.isdigit() or not 100 <= int(num) <= 999999999:
            raise ConfigError(f"expected VM=VMID (100..999999999), got {item!r}", where="--vmid")
        wave.vm(name)
        if int(num) in vmids.values() or int(num) in {v.vmid for v in wave.vms}:
            raise ConfigError(f"vmid {num} is given twice, or planned for a VM of the wave: a temporary VM needs "
                              f"its own", where=f"--vmid {item}")
        vmids[name] = int(num)
    secrets = _secrets(wave, password_env)
    options = _options("rollback", False, 300.0, agent_timeout, 600.0, poll, accept_new_host_keys, console_)
    with _progress(wave, sorted(set(names) | rehearse_mod.unsettled(wave)) if names else None,
                   title="rehearsal") as progress:
        result = rehearse_mod.rehearse_wave(wave, names, secrets, options, parallel=parallel, vmids=vmids,
                                            events=progress.event)
    for v in result.cleaned:
        left = v.get("left_behind")
        console.print(f"{safe(v['vm'])}: an interrupted rehearsal's traces "
                      + (f"[red]not all removed[/]: {safe('; '.join(left))}" if left else "[green]removed[/]"))
    for v in result.vms:
        style = "green" if v["would_boot"] else "red"
        ev = v.get("evidence") or {}
        why = ("agent answered" + (f", addresses {', '.join(ev.get('addresses', []))}" if ev.get("addresses") else "")
               + (f", console: {ev['console'].get('line')!r}" if isinstance(ev.get("console"), dict) else "")) \
            if v["would_boot"] else "; ".join(v.get("reasons") or ["?"])
        if v.get("previous_rehearsal"):
            why += "; an interrupted rehearsal's traces were removed first"
        console.print(f"{safe(v['vm'])}: would boot: [{style}]{'yes' if v['would_boot'] else 'no'}[/] ({safe(why[:600])})")
    err.print(f"report: {safe(result.report)}")
    return result.exit_code


@cutover_app.command("status")
def status(wave_file: Path = WaveArg,
           as_json: bool = typer.Option(False, "--json", help="Print the journal's report as JSON.")) -> int:
    """What the journal says: per VM its phase, both sides, downtime, the last step."""
    from guestprep.cutover import controller, wave as wave_mod

    doc = controller.status(wave_mod.load(wave_file))
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        return 0
    if not doc["plan_hash_matches"]:
        err.print("[yellow]warning:[/] the wave file changed since its run started")
    for vm in doc["vms"]:
        last = vm["steps"][-1] if vm["steps"] else None
        step = f"{last['step']} {last['status']}" if last else "not started"
        down = f", downtime {vm['downtime_s']:.1f} s" if vm["downtime_s"] is not None else ""
        console.print(f"{safe(vm['vm'])}: {safe(vm['phase'])} (last step: {safe(step)}{down}); source "
                      f"{safe(json.dumps(vm['source_state']))}; target {safe(json.dumps(vm['target_state']))}"
                      + (f"; error: {safe(vm['error'])}" if vm["error"] else ""))
    return 0
