"""Foundations every kind of run shares: data sets, utilities and the seams that later
chapters plug into, settings (config dataclasses, validated once), run folders
(checkpoints, history, resume) and data-parallel processes. Part "Foundations" of the
book; generated from its chapters."""
