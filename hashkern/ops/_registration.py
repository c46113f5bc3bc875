"""The one way hashkern registers fake (meta) implementations, so ``torch.compile`` traces every op.

Every op package's ``autograd.py`` writes ``@register_fake("hashkern::<op>")`` above a function
of the op's arguments: compiled ops of ``hashkern._C`` write caller-allocated outputs and their
fakes return None; ``torch.library.custom_op`` ops return empty tensors of the outputs' shapes.
"""
from __future__ import annotations

import torch

from hashkern import _ext  # noqa: F401  (loading it registers the compiled ops)

__all__ = ["register_fake"]


def _registered(qualname: str) -> bool:
    namespace, name = qualname.split("::")
    return hasattr(getattr(torch.ops, namespace), name)


def register_fake(qualname: str):
    """Decorator: ``torch.library.register_fake(qualname)``, skipped when this build has no such op
    (an extension built without it, or none at all); returns the function unchanged."""
    def decorate(fake):
        if _registered(qualname):
            torch.library.register_fake(qualname)(fake)
        return fake
    return decorate
