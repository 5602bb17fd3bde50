"""The latency objective: FBNet's loss terms and Gumbel-softmax, lookup tables timed on
this machine, and the latency term added to the DARTS search. Part "Latency" of the
book."""
