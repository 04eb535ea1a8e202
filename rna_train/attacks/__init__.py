"""Attacks that try to bring forgotten knowledge back: relearning and quantization (issue 15).

Each attack re-scores held-out forget and retain texts (:mod:`rna_train.attacks.textnll`) under the
attack and reports per-document means with bootstrap intervals, beside the unattacked model and,
when given, the base model.
"""
