"""The robustness suite behind ``rna robustness``: its config (:mod:`.config`), the resumable runner
(:mod:`.suite`) and the report (:mod:`.report`). The sections themselves are registered units in
:mod:`rna_train.eval.units` (see :mod:`rna_train.eval.registry`)."""
