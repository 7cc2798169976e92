#!/usr/bin/env python3
"""Fleet preflight throughput: guestprep vs. Ansible running the same collector script.

Both tools reach N "guests" that are all one real OpenSSH sshd on 127.0.0.1 (distinct
inventory names), with the same forks/parallelism, the same key, the same host-key
checking, and the same collector (guest_scripts/linux/collect.sh). Prints wall times
(medians of --reps runs), guests per second and the ratio. Baseline: `ansible all -m script`.

    python benchmarks/preflight_fleet.py [--sizes 50,200] [--parallel 50] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.sshd import start_sshd  # noqa: E402

COLLECTOR = REPO / "guest_scripts" / "linux" / "collect.sh"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    res = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.monotonic() - start
    if res.returncode not in (0, 1, 3):
        raise SystemExit(f"{argv[0]} failed ({res.returncode}): {res.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="50,200")
    ap.add_argument("--parallel", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    ansible = shutil.which("ansible", path=str(Path(sys.executable).parent)) or shutil.which("ansible")
    if not ansible:
        raise SystemExit("ansible-core is not installed in this venv (make bench installs the [bench] extra)")
    work = Path(tempfile.mkdtemp(prefix="gp-bench-"))
    server = start_sshd(work / "sshd", max_startups=2000, extra_config="MaxSessions 2000\n")
    print(f"machine: {machine()}")
    print(f"sshd: 127.0.0.1:{server.port}; parallel/forks = {args.parallel}; reps = {args.reps} (median)")
    results = []
    try:
        for n in (int(x) for x in args.sizes.split(",")):
            names = [f"g{i:04d}" for i in range(n)]
            fleet = work / f"fleet-{n}.yaml"
            fleet.write_text("defaults:\n  port: %d\n  user: root\n  key_file: %s\n  agent: false\nguests:\n%s" % (
                server.port, server.user_key, "".join(f"  - name: {x}\n    address: 127.0.0.1\n" for x in names)))
            ini = work / f"hosts-{n}.ini"
            ini.write_text("[all]\n" + "".join(
                f"{x} ansible_host=127.0.0.1 ansible_port={server.port} ansible_user=root "
                f"ansible_ssh_private_key_file={server.user_key}\n" for x in names))
            env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_LOCAL_TEMP": str(work / "ans-tmp"),
                   "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={server.known_hosts} -o ControlMaster=no",
                   "ANSIBLE_PIPELINING": "True", "ANSIBLE_GATHERING": "explicit", "ANSIBLE_STDOUT_CALLBACK": "json",
                   "ANSIBLE_PYTHON_INTERPRETER": "auto_silent", "ANSIBLE_NOCOLOR": "1"}
            ours = [timed([sys.executable, "-m", "guestprep.cli", "preflight", "-i", str(fleet), "--parallel",
                           str(args.parallel), "--known-hosts", str(server.known_hosts), "--format", "json",
                           "--out", str(work / f"out-{n}"), "--quiet"], env) for _ in range(args.reps)]
            theirs = [timed([ansible, "all", "-i", str(ini), "-f", str(args.parallel), "-m", "script",
                             "-a", str(COLLECTOR)], env) for _ in range(args.reps)]
            o, t = statistics.median(ours), statistics.median(theirs)
            results.append((n, o, t))
            print(f"N={n:4d}  guestprep {o:7.2f} s ({n / o:6.1f} guests/s)   ansible -m script {t:7.2f} s "
                  f"({n / t:6.1f} guests/s)   ratio {t / o:5.2f}x  (runs: ours {[round(x, 2) for x in ours]}, "
                  f"ansible {[round(x, 2) for x in theirs]})")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("goal: ratio >= 3x (throughput vs. Ansible with the same forks)")


if __name__ == "__main__":
    main()
