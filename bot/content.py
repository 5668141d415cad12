"""Knowledge files (knowledge/*.yml): each read once per process, then served from memory."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import yaml

_lock = threading.Lock()
_cache: Dict[Tuple[Path, Optional[Callable[[Any], Any]]], Any] = {}


def load_yaml(path: Path, parse: Optional[Callable[[Any], Any]] = None) -> Any:
    """The YAML file at path, passed through parse when given, read once and then cached."""
    key = (Path(path), parse)
    with _lock:
        if key not in _cache:
            with open(key[0], encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
            _cache[key] = parse(data) if parse is not None else data
        return _cache[key]
