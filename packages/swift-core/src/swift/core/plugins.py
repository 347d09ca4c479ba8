"""`--custom_register_path file.py`: user files that register their own models, templates or datasets."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from swift.core.errors import ConfigError

logger = logging.getLogger(__name__)


def load_custom_register(paths: Iterable[str], *, flag: str = "--custom_register_path") -> list[ModuleType]:
    """Execute each file once (by path) so that its `register_*` calls take effect; return the modules.

    A file's own errors (syntax, a duplicate name) propagate as they are: the traceback points into the user's file.
    """
    modules = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if not path.is_file() or path.suffix != ".py":
            raise ConfigError(f"{flag} {raw}: not a python file")
        name = f"swift_custom_register_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
        if name in sys.modules:  # the same file twice (flag and config) registers once
            modules.append(sys.modules[name])
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        logger.info("registered what %s defines", path)
        modules.append(module)
    return modules
