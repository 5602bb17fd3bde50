"""Performance: fused and channels-last kernels for the search cell and the evaluation
network, recomputed cells, step timing, and PC-DARTS's partial channels. Part
"Performance" of the book."""
