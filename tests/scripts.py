"""Loading the repository's scripts (app.py, scripts/*.py, the Lambda handler) as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_script(name: str, path: Path) -> ModuleType:
    """The file at `path` as module `name`, loaded by path so no other module of that name can win.
    Registered in sys.modules: dataclasses look their defining module up there."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
