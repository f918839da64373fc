"""Linear layers in the three weight formats of the DeepSeek-V4 checkpoints.

"float": `weight` [out, in] in the model dtype.
"fp8": `weight` float8_e4m3fn [out, in] + `scale` float8_e8m0fnu [ceil(out/128), ceil(in/128)] (one multiplier
per 128x128 block).
"fp4": `weight` int8 [out, in/2] holding two e2m1 codes per byte + `scale` float8_e8m0fnu [out, in/32].
Quantised weights are dequantised on the fly in forward, except in an "fp8" Linear with activation
quantisation on the Triton backend: it quantises x with the act_quant kernel and runs the block-scaled FP8
GEMM kernel (the same numbers up to fp32 summation order; the dequantising path stays for the torch backend
and whenever autograd wants a gradient).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Format = Literal["float", "fp8", "fp4"]
FP8_BLOCK = 128
FP4_BLOCK = 32


class Linear(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        fmt: Format = "float",
        dtype: torch.dtype = torch.float32,
        act_quant: bool = False,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.fmt, self.dtype = in_features, out_features, fmt, dtype
        # The official FP8/FP4 GEMMs take FP8 activations (per-token blocks of 128, power-of-two scales).
        self.act_quant = act_quant and fmt != "float"
        if fmt == "float":
            self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype))
            self.scale = None
        elif fmt == "fp8":
            self.weight = nn.Parameter(
                torch.empty(out_features, in_features, dtype=torch.float8_e4m3fn), requires_grad=False
            )
            scale_shape = (-(-out_features // FP8_BLOCK), -(-in_features // FP8_BLOCK))
            self.scale = nn.Parameter(
                torch.empty(scale_shape, dtype=torch.float8_e8m0fnu), requires_grad=False
            )
        elif fmt == "fp4":
            if in_features % FP4_BLOCK:
                raise ValueError(f"FP4 weights need in_features % {FP4_BLOCK} == 0, got {in_features}")
            self.weight = nn.Parameter(
                torch.empty(out_features, in_features // 2, dtype=torch.int8), requires_grad=False
            )
            self.scale = nn.Parameter(
                torch.empty(out_features, in_features // FP4_BLOCK, dtype=torch.float8_e8m0fnu),
                requires_grad=False,
            )
        else:
            raise ValueError(f"unknown weight format {fmt!r}; expected 'float', 'fp8' or 'fp4'")

    def dense_weight(self) -> torch.Tensor:
        """The weight as a [out, in] tensor in the compute dtype."""
        if self.fmt == "float":
            return self.weight
        from . import quant  # quantised checkpoints only; float models never need it

        if self.fmt == "fp8":
            return quant.dequant_fp8(self.weight, self.scale).to(self.dtype)
        return quant.dequant_fp4(self.weight, self.scale).to(self.dtype)

    def _use_fp8_gemm(self, x: torch.Tensor) -> bool:
        from ..kernels import dispatch

        # the kernels have no backward: keep the differentiable path whenever x needs a gradient
        return not (x.requires_grad and torch.is_grad_enabled()) and dispatch.backend(x.device) == "triton"

    def _fp8_gemm(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out] in the compute dtype: FP8 activations (per token, per 128 inputs,
        power-of-two scales) times the FP8 weight, fp32 accumulation with both scales applied per K block."""
        from ..kernels import dispatch

        on_gpu = x.device.type == "cuda"
        # a GPU multiplies e4m3 operands; the interpreter has no fp8 arithmetic and takes the values in fp32
        xq, xs = dispatch.act_quant(x.reshape(-1, self.in_features), FP8_BLOCK,
                                    out_dtype=torch.float8_e4m3fn if on_gpu else None)
        w = self.weight if on_gpu else self.weight.float()
        y = dispatch.fp8_gemm(xq, xs, w, self.scale.view(torch.uint8), self.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fmt == "fp8" and self.act_quant and self._use_fp8_gemm(x):
            return self._fp8_gemm(x)
        if self.act_quant:
            from .quant import act_quant_fp8_sim

            x = act_quant_fp8_sim(x, FP8_BLOCK)
        return F.linear(x if x.dtype == self.dtype else x.to(self.dtype), self.dense_weight())

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, {self.fmt}"


class RMSNorm(nn.Module):
    """Weighted RMSNorm; the weight is held in fp32 like the official model."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .ops import rms_norm

        return rms_norm(x, self.weight, self.eps)
