"""Robustness evaluation of (unlearned) causal LMs: multiple-choice accuracy on clean and
keyword-perturbed probes, the latent audit of Assumption 1, predicted vs. measured robustness, and
reports.

Importing this package is cheap; torch and transformers load inside the functions that need them.
"""
