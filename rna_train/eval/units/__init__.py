"""Registered metric units (one module each; :mod:`rna_train.eval.registry` imports them all)."""
