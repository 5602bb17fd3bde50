"""The DARTS search on convolutional cells: candidate operations, the mixed operation,
genotypes, the supernet, the architect, the search loop and its figures, single-level
optimisation, the collapse diagnostics and the remedies. Part "Search" of the book."""
