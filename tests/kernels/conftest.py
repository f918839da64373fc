"""Kernel tests run the Triton kernels under the interpreter on CPU; the flag must be set before the kernel
modules are imported (Triton decides at decoration time)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
