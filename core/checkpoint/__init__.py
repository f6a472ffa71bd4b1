"""Checkpoints: the canonical state and the on-disk format (`format`), and the checks every
file passes before anything in it is used (`checks`)."""
