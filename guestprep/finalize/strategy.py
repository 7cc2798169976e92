"""Which first-boot strategy a VM gets: from the hand-off's boot evidence, or as given.

- ``direct``: the system disk on VirtIO SCSI from the first boot. Chosen automatically only
  when the evidence PROVES it (WIN-VIOSCSI-BOOTSTART / LNX-INITRAMFS-VIRTIO passed).
- ``sata-first`` (Windows): first boot from SATA with a small VirtIO disk so Windows binds
  vioscsi itself, then the system disk moves to SCSI. The automatic choice for a Windows
  guest without proof.
- A Linux (or other) guest without proof is refused unless a strategy is given explicitly:
  there is no Linux equivalent of sata-first that makes an initramfs learn virtio_scsi.

An explicit strategy (policy ``strategy:`` or ``finalize --strategy``) is honoured; a warning
says when the evidence contradicts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guestprep.errors import ConfigError
from guestprep.handoff import Handoff

EXPLICIT = ("direct", "sata-first")
NOT_BOOTING = {"windows": "INACCESSIBLE_BOOT_DEVICE (0x7B)", "linux": "the initramfs emergency shell (root not found)"}


@dataclass
class StrategyDecision:
    strategy: str                     # direct | sata-first
    explicit: bool
    reason: str
    warnings: list[str] = field(default_factory=list)
    agent_known: bool = False         # the guest agent is known installed: sata-first may wait for it

    def to_dict(self) -> dict[str, object]:
        return {"strategy": self.strategy, "explicit": self.explicit, "reason": self.reason,
                "warnings": self.warnings, "agent_known": self.agent_known}


def decide(h: Handoff, family: str, override: str | None = None) -> StrategyDecision:
    if override is not None and override not in EXPLICIT:
        raise ConfigError(f"--strategy must be one of {', '.join(EXPLICIT)}, got {override!r}", where="--strategy")
    requested = override or (h.policy.strategy if h.policy.strategy in EXPLICIT else None)
    ev = h.boot_evidence
    os_name = (ev.os if ev and ev.os else None) or family
    proven = bool(ev and ev.proven)
    why_not = (ev.reason if ev else "") or "the hand-off holds no boot evidence (build it with handoff --guest-facts)"
    agent_known = bool(ev and ev.agent_installed)
    how = "--strategy" if override else "policy strategy"
    if requested:
        d = StrategyDecision(requested, True, f"{requested} given explicitly ({how})", agent_known=agent_known)
        if requested == "direct" and not proven:
            d.warnings.append(f"strategy direct given explicitly although a direct VirtIO SCSI boot is NOT proven "
                              f"({why_not}): the first boot may stop with {NOT_BOOTING.get(os_name, 'no boot disk')}")
        elif requested == "sata-first" and proven:
            d.warnings.append(f"strategy sata-first given explicitly although the evidence proves a direct boot "
                              f"({ev.reason if ev else ''}); the extra switch reboot is not needed")
        return d
    if proven:
        assert ev is not None
        return StrategyDecision("direct", False, f"direct: proven by {ev.source} ({ev.reason})", agent_known=agent_known)
    if os_name == "windows":
        return StrategyDecision("sata-first", False, f"sata-first: a direct VirtIO SCSI boot is not proven ({why_not}); "
                                "Windows first boots from SATA and binds vioscsi to a small VirtIO disk",
                                agent_known=agent_known)
    raise ConfigError(f"VM {h.vm.name!r} ({os_name or 'unknown OS'}): a direct VirtIO SCSI boot is not proven "
                      f"({why_not}), and there is no SATA-first route for it. Run preflight (and prepare --apply) "
                      "on the guest and rebuild the hand-off with --guest-facts, or give --strategy direct "
                      "explicitly to accept the risk", where="strategy")
