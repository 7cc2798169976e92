"""hostside/tmpfiles.py answers as the stdlib functions it stands in for (tempfile, shutil.which)."""

from __future__ import annotations

import os
import shutil
import stat

from hostside import tmpfiles


def test_which_finds_what_shutil_finds(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (tmp_path / "bin" / "plain").write_text("not executable")
    (tmp_path / "bin" / "dir.d").mkdir(mode=0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'nowhere'}:{tmp_path / 'bin'}:/usr/bin:/bin")
    for name in ("tool", "plain", "dir.d", "qemu-img", "sh", "no-such-tool", str(tool), str(tmp_path / "bin" / "plain")):
        assert tmpfiles.which(name) == shutil.which(name), name


def test_exclusive_file_is_new_private_and_unique(tmp_path):
    seen = set()
    for _ in range(50):
        fd, path = tmpfiles.exclusive_file(str(tmp_path), ".m.", ".partial")
        os.write(fd, b"x")
        os.close(fd)
        assert os.path.dirname(path) == str(tmp_path) and os.path.basename(path).startswith(".m.")
        assert path.endswith(".partial") and stat.S_IMODE(os.stat(path).st_mode) == 0o600
        seen.add(path)
    assert len(seen) == 50


def test_exclusive_file_raises_oserror_where_mkstemp_would(tmp_path):
    try:
        tmpfiles.exclusive_file(str(tmp_path / "missing"), "a", "b")
    except OSError as exc:
        assert exc.strerror
    else:
        raise AssertionError("no error for a missing directory")


def test_anonymous_file_reads_back_and_leaves_no_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with tmpfiles.anonymous_file() as f:
        f.write(b"qemu-img: error\n")
        f.flush()
        f.seek(0)
        assert f.read() == b"qemu-img: error\n"
        assert os.listdir(tmp_path) == []    # O_TMPFILE: never had a name
