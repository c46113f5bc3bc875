"""Kernels with autograd wrappers, one sub-package per op, every one with the same files in the same roles:

``__init__.py`` the public function and its argument checks, plus the op's backend declaration
(:class:`hashkern._dispatch.OpBackends`); ``autograd.py`` custom ops, fakes and autograd Functions;
``torch_impl.py`` the PyTorch backend; ``triton_launch.py`` + ``triton_kernels.py`` the Triton backend
(where the op has one); ``_common.py`` helpers both backends use; ``reference.py`` the float64 oracle.
Ops import nothing from losses, models or the application.
"""
