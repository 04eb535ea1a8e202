"""Unlearning for any Hugging Face causal LM with every method and both RNA variants.

Importing this package is cheap: heavy dependencies (transformers, accelerate) load only in the
modules that use them.
"""

__version__ = "0.1.0"
