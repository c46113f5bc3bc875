"""Old import paths of names that moved, kept working for one release with a ``DeprecationWarning``.

``import hashkern.train`` (or ``from hashkern.train import Trainer``) finds no file: a finder on
``sys.meta_path`` answers with a module whose attributes are looked up, on first use, in the
modules the names moved to, and each such use warns. The README's "Moved names" table lists them.
Nothing in hashkern imports an old path.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

# old module -> the modules its public names live in now (searched in this order)
MOVED = {
    "hashkern.train": ("hashkern.training.train", "hashkern.training.loop", "hashkern.training.config",
                       "hashkern.training.checkpoint", "hashkern.training.checkpoint_eval"),
    "hashkern.pretrain": ("hashkern.training.pretrain", "hashkern.training.config"),
    "hashkern.demo": ("hashkern.training.demo",),
    "hashkern.evaluate": ("hashkern.training.evaluate",),
    "hashkern.checkpoint": ("hashkern.training.checkpoint",),
    "hashkern.cli": ("hashkern.training.cli",),
    "hashkern.data": ("hashkern.training.data",),
    "hashkern.data.augment": ("hashkern.training.data.augment",),
    "hashkern.data.datasets": ("hashkern.training.data.datasets",),
    "hashkern.data.split": ("hashkern.training.data.split",),
    "hashkern.ops.softsort.functions": ("hashkern.ops.softsort.autograd",),
    "hashkern.ops.softsort.scan_torch": ("hashkern.ops.softsort.torch_impl", "hashkern.ops.softsort._common"),
    "hashkern.ops.softsort.triton_scan": ("hashkern.ops.softsort.triton_launch",),
    "hashkern.ops.softsort.triton_scan_kernels": ("hashkern.ops.softsort.triton_kernels",),
    "hashkern.ops.patchsim.torch_gemm": ("hashkern.ops.patchsim.torch_impl", "hashkern.ops.patchsim._common"),
    "hashkern.ops.patchsim.triton_fwd": ("hashkern.ops.patchsim.triton_kernels",),
    "hashkern.ops.patchsim.triton_bwd": ("hashkern.ops.patchsim.triton_kernels",),
}
_PACKAGES = {"hashkern.data"}


def _module_getattr(old: str):
    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        for new in MOVED[old]:
            module = importlib.import_module(new)
            if hasattr(module, name):
                warnings.warn(f"{old}.{name} moved to {new}.{name}; the old path goes away in the next release",
                              DeprecationWarning, stacklevel=2)
                return getattr(module, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved to {MOVED[old][0]!r})")
    return __getattr__


class _MovedLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        old = module.__name__
        warnings.warn(f"module {old} moved to {MOVED[old][0]}; the old path goes away in the next release",
                      DeprecationWarning, stacklevel=2)
        module.__getattr__ = _module_getattr(old)
        if old in _PACKAGES:
            module.__path__ = []  # so its old sub-modules can be imported too

    def get_code(self, name: str):
        """``python -m hashkern.cli``: runs the moved module's ``main``."""
        new = MOVED[name][0]
        return compile(f"import sys\nfrom {new} import main\nsys.exit(main())\n", f"<{name} moved to {new}>",
                       "exec")


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(), is_package=fullname in _PACKAGES)


def install() -> None:
    """Put the finder first on ``sys.meta_path``, once (so a stale file at an old path is not found instead)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
