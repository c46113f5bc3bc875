"""Kernels with autograd wrappers: one sub-package per op (reference.py, kernels, public function)."""
