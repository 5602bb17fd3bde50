"""Data-parallel runs on many processes (torch.distributed, torchrun). Part "Running at
scale" of the book."""
