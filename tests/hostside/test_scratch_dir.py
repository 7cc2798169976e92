"""Several disks of one hand-off share one scratch directory (batch.prepare_all)."""

from __future__ import annotations

import os
import stat

from hostside import image, remote


def test_two_vmfsthin_sources_in_one_run_get_their_own_descriptor_copies(images):
    scratch = remote.SecretDir.create()
    try:
        first = image.inspect(str(images["vmfsThin"]), image.SourceOptions(), scratch)
        second = image.inspect(str(images["vmfsThin"]), image.SourceOptions(), scratch)   # was FileExistsError
        assert first.virtual_size == second.virtual_size
        copies = sorted(os.listdir(scratch.path))
        assert len(copies) == 2 and all(c.endswith("-descriptor.vmdk") for c in copies)
        for c in copies:
            assert stat.S_IMODE(os.stat(os.path.join(scratch.path, c)).st_mode) == 0o600
    finally:
        scratch.close()
    assert not os.path.exists(scratch.path)
