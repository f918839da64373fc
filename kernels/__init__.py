"""Triton kernels for DeepSeek-V4's hot paths, each beside its PyTorch reference.

Call them through `agentkit.kernels.dispatch` (Triton on CUDA, the reference on CPU;
AGENTKIT_KERNELS=triton|torch forces either). Nothing is imported here: importing the package must not pull in
torch or triton.
"""
