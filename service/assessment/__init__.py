"""Assessment numerics: the lesionable network runner, lesion paths and compiled kernels, importance and coherence
with their statistics. Pure PyTorch/NumPy; no database involved."""
