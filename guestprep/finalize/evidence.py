"""Boot evidence for the hand-off: is a direct boot on VirtIO SCSI PROVEN by the guest's facts?

The proof is the outcome of the check that owns the question, never a reading of fact
internals, so this module and the checks cannot drift apart:

- Windows: WIN-VIOSCSI-BOOTSTART passes (that check passes only on the complete boot-start
  state: service key, driver file, device-id mapping);
- Linux: LNX-INITRAMFS-VIRTIO passes for every installed kernel (an ``error``/``skipped``
  outcome, e.g. an initramfs that could not be listed, is not proof).

The facts come from the file given to ``handoff --guest-facts``: the collector's raw JSON
(``guestprep facts --raw``), re-checked here, or a preflight report, whose findings already
hold the check outcomes. The agent (WIN-QEMU-GA / LNX-QEMU-GA) is recorded the same way:
``sata-first`` waits for it only when it is known to be installed.
"""

from __future__ import annotations

from typing import Any, Mapping

from guestprep.errors import ConfigError, GuestprepError
from guestprep.handoff import BootEvidence

PROOF_CHECK = {"windows": "WIN-VIOSCSI-BOOTSTART", "linux": "LNX-INITRAMFS-VIRTIO"}
AGENT_CHECK = {"windows": "WIN-QEMU-GA", "linux": "LNX-QEMU-GA"}
RAW_SCHEMAS = {"guestprep.linux.collect/1": "linux", "guestprep.windows.facts/1": "windows"}


def _outcomes(findings: list[Mapping[str, Any]], check_id: str) -> list[dict[str, str]]:
    return [{"resource": str(f.get("resource", "")), "status": str(f.get("status", "")),
             "message": str(f.get("message", ""))} for f in findings if f.get("check_id") == check_id]


def judge(os_name: str | None, findings: list[Mapping[str, Any]], source: str) -> BootEvidence:
    """Evidence from check findings (dicts with check_id/status/resource/message)."""
    if os_name not in PROOF_CHECK:
        return BootEvidence(os=os_name, check=None, proven=False, source=source,
                            reason=f"no VirtIO boot proof is defined for OS {os_name or 'unknown'!r}")
    check_id = PROOF_CHECK[os_name]
    outs = _outcomes(findings, check_id)
    if not outs:
        proven, reason = False, f"{check_id} was not evaluated for this guest"
    else:
        bad = [o for o in outs if o["status"] != "pass"]
        proven = not bad
        if proven:
            what = "every installed kernel" if os_name == "linux" else "the boot-start state"
            reason = f"{check_id} passed for {what} ({', '.join(o['resource'] or '-' for o in outs)})"
        else:
            reason = f"{check_id} did not pass: " + "; ".join(
                f"{o['resource'] or '-'}: {o['status']} ({o['message']})" for o in bad)
    agent = _outcomes(findings, AGENT_CHECK[os_name])
    agent_installed: bool | None = None
    if agent and all(o["status"] == "pass" for o in agent):
        agent_installed = True
    elif any(o["status"] == "fail" for o in agent):
        agent_installed = False
    return BootEvidence(os=os_name, check=check_id, proven=proven, outcomes=outs, reason=reason,
                        agent_installed=agent_installed, source=source)


def _from_raw_facts(data: Mapping[str, Any], os_name: str, guest: str, where: str) -> BootEvidence:
    from guestprep.checks import registry

    try:
        if os_name == "linux":
            from guestprep.facts import linux
            facts = linux.parse(data)
        else:
            from guestprep.facts import windows
            facts = windows.parse(data, where=where)
    except GuestprepError as e:
        raise ConfigError(f"guest facts do not parse: {e.message}", where=where) from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:   # outside input: never a traceback
        raise ConfigError(f"guest facts do not parse: {type(e).__name__}: {e}", where=where) from None
    findings = []
    for check_id in (PROOF_CHECK[os_name], AGENT_CHECK[os_name]):
        findings += [f.to_dict() for f in registry.get(check_id).evaluate(facts, guest)]
    return judge(os_name, findings, "facts")


def boot_evidence(data: Any, vm_name: str, where: str) -> BootEvidence:
    """The evidence held by a guest facts/report document (already read as JSON)."""
    if not isinstance(data, Mapping):
        raise ConfigError("guest facts must be a JSON object", where=where)
    schema = data.get("schema")
    if schema in RAW_SCHEMAS:
        return _from_raw_facts(data, RAW_SCHEMAS[schema], vm_name, where)
    guests = data.get("guests")
    if isinstance(guests, list):   # a preflight report: this VM's entry
        mine = [g for g in guests if isinstance(g, Mapping) and g.get("guest") == vm_name]
        if not mine and len(guests) == 1 and isinstance(guests[0], Mapping):
            mine = guests
        if not mine:
            return BootEvidence(os=None, check=None, proven=False, source="report",
                                reason=f"the report has no guest named {vm_name!r}")
        g = mine[0]
        findings = g.get("findings", [])
        if not isinstance(findings, list) or not all(isinstance(f, Mapping) for f in findings):
            raise ConfigError(f"report guest {g.get('guest')!r}: findings must be a list of objects", where=where)
        os_name = g.get("os") if isinstance(g.get("os"), str) else None
        return judge(os_name, findings, "report")
    return BootEvidence(os=None, check=None, proven=False, source="unknown",
                        reason="neither the collector's raw facts (guestprep facts --raw) nor a preflight report: "
                               "nothing to prove a VirtIO boot with")
