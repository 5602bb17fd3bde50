"""Recurrent cells: the Penn Treebank data, the recurrent search space and network,
their search and their training. Part "Recurrent cells" of the book."""
