#!/usr/bin/env python3
"""Build dist/guestprep-host.pyz: hostside + the shared ground floor and hand-off record, stdlib only.

The controller copies this one file to each Proxmox node and runs it with the
node's python3; nothing is installed there. The build refuses any import that
is not the standard library or a bundled module, so a stray dependency fails
here rather than on a node at cutover time.

    python3 tools/build_zipapp.py [--out dist/guestprep-host.pyz]
"""

from __future__ import annotations

import argparse
import ast
import os
import py_compile
import shutil
import sys
import tempfile
import zipapp
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The ground floor and the one hand-off reader (record + policy + the .vmx hardware bounds it checks).
BUNDLED_SHARED = ["guestprep/models.py", "guestprep/errors.py", "guestprep/handoff.py", "guestprep/target_policy.py",
                  "guestprep/vmx.py"]
# The real guestprep/__init__.py belongs to the controller; ship a stdlib-only stub.
GUESTPREP_INIT = '"""guestprep subset bundled in guestprep-host.pyz (models, errors, hand-off record)."""\n'
# No cyclic garbage collection while the modules load: hostside.cli.run() turns it back on
# once the command's modules are in (start-up time is part of every conversion, issue 17).
MAIN = ("import gc\n"
        "gc.disable()\n"
        "from hostside.cli import run\n"
        "run(gc_paused=True)\n")


def bundled_files() -> list[str]:
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "hostside").glob("*.py"))
    return files + BUNDLED_SHARED


def check_imports(root: Path) -> list[str]:
    """Imports that are neither stdlib nor bundled (empty list = fine)."""
    bundled = {"hostside", "guestprep"}
    allowed_guestprep = {"guestprep"} | {"guestprep." + Path(f).stem for f in BUNDLED_SHARED}
    bad = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top == "guestprep" and name not in allowed_guestprep:
                    bad.append(f"{path.relative_to(root)}: imports {name} (not bundled)")
                elif top not in bundled and top not in sys.stdlib_module_names \
                        and top != "__future__":
                    bad.append(f"{path.relative_to(root)}: imports {name} (not stdlib)")
    return bad


def build(out: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="guestprep-zipapp-") as tmp:
        stage = Path(tmp) / "app"
        for rel in bundled_files():
            dst = stage / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / rel, dst)
        (stage / "guestprep" / "__init__.py").write_text(GUESTPREP_INIT)
        (stage / "__main__.py").write_text(MAIN)
        bad = check_imports(stage)
        if bad:
            raise SystemExit("build_zipapp: refusing to build:\n  " + "\n  ".join(bad))
        # bytecode beside each module (zipimport's legacy location, CPython Lib/zipimport.py
        # _zip_searchorder): a node whose python3 has this magic number skips compiling every
        # module on every run (zipimport writes no cache); another version falls back to source
        for src in sorted(stage.rglob("*.py")):
            py_compile.compile(str(src), cfile=str(src) + "c", doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        zipapp.create_archive(stage, partial, interpreter="/usr/bin/env python3",
                              compressed=True)
        os.replace(partial, out)  # never leave a half-written archive under the real name
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "dist" / "guestprep-host.pyz")
    args = p.parse_args(argv)
    path = build(args.out)
    print(f"built {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
