"""The evaluation networks (NetworkCIFAR, NetworkImageNet) and their training from
scratch. Part "Evaluation" of the book."""
