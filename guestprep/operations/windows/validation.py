"""Validation kit: run the whole Windows flow against one lab VM and keep the evidence.

    python -m guestprep.operations.windows.validation GUEST -i INVENTORY --evidence DIR
           [--ca-bundle CA.pem | --insecure] [--timeout S] [--skip-rollback]

Steps (each one the ordinary guestprep command, run as a child process with an argv list):
collect + checks (preflight), prepare (plan), prepare --apply, preflight again (verify),
prepare again (must plan nothing: idempotent), rollback, preflight after rollback. Every
step's JSON output, exit code and duration go into DIR (created exclusively; never
overwritten), with summary.json last. Credentials come from the inventory's password_env as
for every command: nothing secret is written. See docs/windows-validation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

# The CLI in this very interpreter (no PATH lookup, no shell).
CLI = [sys.executable, "-c", "import sys; from guestprep.cli import main; sys.argv[0] = 'guestprep'; main()"]


def steps(guest: str, inventory: str, ev: Path, tls: list[str], timeout: str, rollback: bool) -> list[tuple[str, list[str]]]:
    common = ["-i", inventory, "--timeout", timeout, *tls]
    out = [
        ("01-preflight", ["preflight", guest, *common, "--format", "json", "--out", str(ev / "01-preflight"),
                          "--fail-on", "blocker", "--quiet"]),
        ("02-plan", ["prepare", guest, *common, "--json", "--json-out", str(ev / "02-plan.json")]),
        ("03-apply", ["prepare", guest, *common, "--apply", "--json", "--json-out", str(ev / "03-apply.json")]),
        ("04-verify", ["preflight", guest, *common, "--format", "json", "--out", str(ev / "04-verify"), "--quiet"]),
        ("05-replan", ["prepare", guest, *common, "--json", "--json-out", str(ev / "05-replan.json")]),
    ]
    if rollback:
        out += [
            ("06-rollback", ["rollback", guest, *common, "--json", "--json-out", str(ev / "06-rollback.json")]),
            ("07-after-rollback", ["preflight", guest, *common, "--format", "json", "--out",
                                   str(ev / "07-after-rollback"), "--quiet"]),
        ]
    return out


def run(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m guestprep.operations.windows.validation",
                                 description="Run collect/prepare/verify/rollback against one lab Windows VM; keep the evidence.")
    ap.add_argument("guest", help="the guest's name in the inventory (one lab VM, never production)")
    ap.add_argument("-i", "--inventory", required=True, help="fleet YAML or Ansible inventory naming the guest")
    ap.add_argument("--evidence", required=True, help="new directory for the evidence (must not exist)")
    ap.add_argument("--ca-bundle", help="CA bundle for the guest's WinRM/PSRP certificate")
    ap.add_argument("--insecure", action="store_true", help="do not verify TLS (lab only)")
    ap.add_argument("--timeout", default="900", help="per-step guest timeout in seconds (default 900)")
    ap.add_argument("--skip-rollback", action="store_true", help="leave the guest prepared (to go on with a cutover)")
    a = ap.parse_args(argv)
    ev = Path(a.evidence)
    try:
        ev.mkdir(parents=True, exist_ok=False, mode=0o700)
    except FileExistsError:
        print(f"guestprep validation: {ev} already exists; choose a new evidence directory", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"guestprep validation: cannot create {ev}: {exc.strerror}", file=sys.stderr)
        return 2
    if not os.path.isfile(a.inventory):
        print(f"guestprep validation: inventory {a.inventory} not found", file=sys.stderr)
        return 2
    tls = ["--ca-bundle", a.ca_bundle] if a.ca_bundle else (["--insecure"] if a.insecure else [])
    summary: dict = {"schema": "guestprep.windows-validation/1", "guest": a.guest,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps": []}
    worst = 0
    for name, args in steps(a.guest, a.inventory, ev, tls, a.timeout, not a.skip_rollback):
        start = time.monotonic()
        proc = subprocess.run(CLI + args, capture_output=True, text=True, check=False)
        (ev / f"{name}.stdout.txt").write_text(proc.stdout, encoding="utf-8")
        (ev / f"{name}.stderr.txt").write_text(proc.stderr, encoding="utf-8")
        rec = {"step": name, "argv": ["guestprep", *args], "rc": proc.returncode,
               "seconds": round(time.monotonic() - start, 1)}
        summary["steps"].append(rec)
        print(f"{name:<20} exit {proc.returncode}  ({rec['seconds']} s)")
        # preflight exits 1 on findings (expected before prepare); 2/3 are setup/reachability errors
        if proc.returncode >= 2:
            worst = max(worst, proc.returncode)
            print(f"guestprep validation: {name} failed (exit {proc.returncode}), stopping; see {ev}/{name}.stderr.txt",
                  file=sys.stderr)
            break
        if name in ("03-apply", "06-rollback") and proc.returncode != 0:
            worst = max(worst, 1)
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    (ev / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"evidence in {ev} (summary.json); now run the manual steps in docs/windows-validation.md")
    return worst


if __name__ == "__main__":
    sys.exit(run())
