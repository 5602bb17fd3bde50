"""FBNet: its search space and supernet, the published FBNet-A/B/C, the search and the
training of a found network. Part "FBNet" of the book."""
