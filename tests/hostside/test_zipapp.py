"""The zipapp runs on a bare python3 (no venv, no site-packages) and bundles only stdlib code."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _builder():
    spec = importlib.util.spec_from_file_location("build_zipapp", REPO / "tools/build_zipapp.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bare_python() -> str:
    for cand in ("/usr/bin/python3", shutil.which("python3")):
        if cand and subprocess.run([cand, "-c", "import sys; assert sys.version_info >= (3, 11)"]
                                   ).returncode == 0:
            return cand
    pytest.skip("no python3 >= 3.11 outside the venv")


def test_zipapp_runs_on_bare_python(tmp_path, images):
    out = tmp_path / "guestprep-host.pyz"
    r = subprocess.run([sys.executable, str(REPO / "tools/build_zipapp.py"), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "guestprep-host.pyz.partial").exists()
    py = _bare_python()
    # -I -S: no site-packages at all, so only the standard library can be imported
    r = subprocess.run([py, "-I", "-S", str(out), "audit", str(images["gpt.raw"]), "--json"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["firmware"] == "uefi"
    r = subprocess.run([py, "-I", "-S", str(out), "convert", str(images["vmfsThin"]), "--to",
                        "qcow2", "--dest", str(tmp_path / "d.qcow2")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([py, "-I", "-S", str(out), "inspect", str(tmp_path / "missing")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_build_refuses_non_stdlib_imports(tmp_path):
    mod = _builder()
    (tmp_path / "hostside").mkdir()
    (tmp_path / "hostside" / "ok.py").write_text("import json\nfrom guestprep.models import Finding\n")
    assert mod.check_imports(tmp_path) == []
    (tmp_path / "hostside" / "bad.py").write_text("import requests\nimport guestprep.cli\n")
    bad = mod.check_imports(tmp_path)
    assert any("requests (not stdlib)" in b for b in bad)
    assert any("guestprep.cli (not bundled)" in b for b in bad)
