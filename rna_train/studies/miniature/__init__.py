"""The miniature world (theory setting 4): a generated topic language, a tiny Llama pretrained on it
from scratch, and the unlearning / evaluation experiments run with the real trainer and evaluator.

Modules: :mod:`.world` (generator), :mod:`.pretrain` (tokenizer, model, cached pretraining),
:mod:`.experiment` (unlearn +/- RNA, evaluate clean / trigger / control, aggregate over seeds),
:mod:`.theory` (registers setting 4 and its C1, C6, C7, C8 verifiers with ``rna_theory``).
"""
