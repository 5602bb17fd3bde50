"""Foundations every kind of run shares: data sets, utilities, settings (config
dataclasses, validated once) and run folders (checkpoints, history, resume). Part
"Foundations" of the book; generated from its chapters."""
