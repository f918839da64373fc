"""Triton import point: the references in this package must work on machines without Triton."""

from __future__ import annotations

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only on installs without the `kernels` extra
    HAS_TRITON = False

    class _Missing:
        """Stands in for `triton`/`tl` so kernel modules import; launching a kernel raises."""

        constexpr = int

        def jit(self, fn=None, **_kw):
            def wrap(f):
                def fail(*_a, **_k):
                    raise RuntimeError("Triton is not installed: pip install 'agentkit[kernels]'")

                return fail

            return wrap(fn) if fn is not None else wrap

        def __getattr__(self, name):
            raise RuntimeError("Triton is not installed: pip install 'agentkit[kernels]'")

    triton = tl = _Missing()  # type: ignore[assignment]

__all__ = ["HAS_TRITON", "triton", "tl"]
