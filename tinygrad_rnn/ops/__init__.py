"""Differentiable ops, one small file per family. Each op is a `Function` subclass whose
`forward` and `backward` sit side by side; kernels (numba or numpy) do the array work."""
