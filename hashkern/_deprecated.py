"""Old import paths kept for one release, without files at the old paths (so history follows the moves).

``MOVED`` maps an old module path to the module that replaced it. Importing an old path warns
(DeprecationWarning) and hands over the new module itself: attributes, and monkeypatches of
them, are shared. ``hashkern/__init__.py`` installs the finder; README's "Moved names" lists them.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__all__ = ["MOVED", "install"]

MOVED = {
    "hashkern.ops.softsort.functions": "hashkern.ops.softsort.autograd",
    "hashkern.ops.softsort.scan_torch": "hashkern.ops.softsort.torch_impl",
    "hashkern.ops.softsort.triton_scan": "hashkern.ops.softsort.triton_launch",
    "hashkern.ops.softsort.triton_scan_kernels": "hashkern.ops.softsort.triton_kernels",
    "hashkern.ops.patchsim.torch_gemm": "hashkern.ops.patchsim.torch_impl",
    "hashkern.ops.patchsim.triton_fwd": "hashkern.ops.patchsim.triton_kernels",
    "hashkern.ops.patchsim.triton_bwd": "hashkern.ops.patchsim.triton_kernels",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path works for one release (README, 'Moved names')",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the new module ran when it was imported


_FINDER = _MovedModules()


def install() -> None:
    """Put the finder of the old paths on ``sys.meta_path`` (once)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
