"""Reading the target policy from YAML (``--policy``, with an optional ``network_map_file``).

The record itself and its validator live in ``guestprep.target_policy`` (standard library
only, shared with guestprep-host); this module only adds the YAML reading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from guestprep.errors import ConfigError
from guestprep.target_policy import TargetPolicy


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", where=str(path)) from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"not valid YAML: {getattr(e, 'problem', e)}", where=at) from e


def load_policy(path: str | Path) -> TargetPolicy:
    p = Path(path)
    data = _load_yaml(p)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("must be a YAML mapping", where=str(p))
    data = dict(data)
    nm_file = data.pop("network_map_file", None)
    if nm_file is not None:
        nm_path = (p.parent / nm_file) if not Path(nm_file).is_absolute() else Path(nm_file)
        nm = _load_yaml(nm_path)
        merged = dict(nm or {})
        merged.update(data.get("network_map") or {})
        data["network_map"] = merged
    return TargetPolicy.from_dict(data, where=str(p))
