"""Start-up hygiene of guestprep-host (issue 17: fixed cost <= 50 ms before qemu starts).

No timing here (benchmarks/fixed_cost.py measures): what is guarded is which modules a run
loads. Each run is a fresh `python -I -S` with only the checkout on sys.path, as the
zipapp runs on a node (no site, no editable-install hook), and lists sys.modules after
main() returned.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Never on a node (not bundled in the zipapp) and never needed by guestprep-host.
THIRD_PARTY = {"rich", "typer", "click", "jinja2", "yaml", "pyVmomi", "requests", "paramiko",
               "proxmoxer", "winrm", "pypsrp", "urllib3", "certifi"}
# Loaded only by what needs them: --handoff (hand-off reader, storage.cfg), https:// sources
# (remote: http.client, ssl), the `audit` command and the check registry (guestprep.models,
# whose import brings pathlib and ipaddress).
NOT_ON_A_LOCAL_CONVERT = {"guestprep.models", "guestprep.handoff", "guestprep.vmx",
                          "guestprep.target_policy", "hostside.handoff", "hostside.pvestorage",
                          "hostside.remote", "http.client", "ssl", "socket", "email",
                          "urllib.request", "logging", "pathlib", "ipaddress", "asyncio",
                          "concurrent.futures",
                          # the stdlib dataclasses imports inspect and execs each class's methods:
                          # hostside.record stands in for it (tests/hostside/test_record.py)
                          "dataclasses", "inspect",
                          # tempfile and shutil (with random, bz2, lzma, fnmatch): hostside/tmpfiles.py;
                          # hashlib loads OpenSSL (~10 M instructions): the verification's digest only
                          "tempfile", "shutil", "random", "bz2", "lzma", "fnmatch", "hashlib", "_hashlib"}


def _modules_after(argv: list[str], cwd: Path) -> tuple[int, set[str], str]:
    code = ("import json, sys\n"
            f"sys.path.insert(0, {str(REPO)!r})\n"
            "from hostside.cli import main\n"
            "rc = main(json.loads(sys.argv[1]))\n"
            "sys.stdout.flush()\n"
            "sys.stderr.write('\\nMODULES ' + json.dumps(sorted(sys.modules)) + '\\n')\n"
            "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code, json.dumps(argv)], cwd=cwd,
                       capture_output=True, text=True, timeout=120)
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("MODULES ")]
    assert line, r.stderr
    return r.returncode, set(json.loads(line[-1].removeprefix("MODULES "))), r.stderr


def _tops(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_help_loads_no_third_party_module(tmp_path):
    rc, mods, err = _modules_after(["--help"], tmp_path)
    assert rc == 0, err
    assert not _tops(mods) & THIRD_PARTY
    # the help text needs the parser, nothing that converts
    assert not mods & ({"hostside.convert", "hostside.batch", "hostside.audit",
                        "hostside.storage", "hostside.verify"} | NOT_ON_A_LOCAL_CONVERT)


@pytest.fixture
def empty_vmdk(tmp_path):
    path = tmp_path / "empty.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(path), "16M"], check=True)
    return path


def test_local_convert_loads_only_what_it_uses(tmp_path, empty_vmdk):
    """A real conversion (inspect, audit, space check, qemu-img, manifest) of a local vmdk."""
    dest = tmp_path / "out.qcow2"
    rc, mods, err = _modules_after(["convert", str(empty_vmdk), "--to", "qcow2", "--dest",
                                    str(dest), "--progress", "none", "--no-verify"], tmp_path)
    assert rc == 0, err
    manifest = json.loads((tmp_path / "out.qcow2.guestprep-manifest.json").read_text())
    assert manifest["audit"]["performed"] is True    # the audit ran, without the models
    assert not _tops(mods) & THIRD_PARTY
    assert not mods & NOT_ON_A_LOCAL_CONVERT, sorted(mods & NOT_ON_A_LOCAL_CONVERT)


def test_dry_run_loads_only_what_it_uses(tmp_path, empty_vmdk):
    rc, mods, err = _modules_after(["convert", str(empty_vmdk), "--to", "qcow2", "--dest",
                                    str(tmp_path / "out.qcow2"), "--dry-run", "--json"],
                                   tmp_path)
    assert rc == 0, err
    assert not (tmp_path / "out.qcow2").exists()
    assert not mods & NOT_ON_A_LOCAL_CONVERT, sorted(mods & NOT_ON_A_LOCAL_CONVERT)


@pytest.mark.parametrize("name", ["mbr.raw", "gpt.raw", "monolithicSparse", "vmfs",
                                  "qcow2"])
def test_manifest_audit_is_the_audit_command_s(images, name):
    """The conversion's audit section (built without guestprep.models) says exactly what the
    `audit` command's findings say (guestprep.models.Finding.to_dict)."""
    from hostside import audit, image, privdir

    secrets = privdir.PrivateDir()
    try:
        src = image.inspect(str(images[name]), image.SourceOptions(), secrets)
        section = audit.manifest_section(src, "web01")
        full = audit.audit(src, "web01")
    finally:
        secrets.close()
    expected = full.to_dict()
    expected["performed"] = True
    expected["failing"] = [{"check_id": f.check_id, "severity": f.severity.value,
                            "resource": f.resource, "message": f.message}
                           for f in full.findings if f.is_open]
    assert section == expected
    assert section["findings"], "an audit always has the partition-table and firmware verdicts"


def test_image_checks_metadata_is_built_with_the_models():
    from guestprep.models import Severity
    from hostside import audit

    checks = audit.IMAGE_CHECKS
    assert checks is audit.IMAGE_CHECKS       # built once
    assert all(isinstance(c.severity, Severity) for c in checks.values())
    assert checks["IMG-PART-TABLE"].severity is Severity.BLOCKER


def test_run_collects_garbage_while_the_command_works(tmp_path):
    """run() keeps the cyclic GC off only while modules load: on when the command runs."""
    code = ("import gc, sys\n"
            f"sys.path.insert(0, {str(REPO)!r})\n"
            "gc.disable()\n"
            "from hostside import cli\n"
            "cli.COMMANDS['inspect'] = lambda args, secrets: print('gc', gc.isenabled()) or 0\n"
            "sys.argv = ['guestprep-host', 'inspect', 'x']\n"
            "cli.run(gc_paused=True)\n")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                       text=True, cwd=tmp_path, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, "gc True"), r.stderr
