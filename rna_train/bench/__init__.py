"""Benchmarks of the trainer's step against a reference-style execution, RNA on vs off, and scoring.

``run`` orchestrates (``rna bench``), ``worker`` runs one measurement in a fresh process
(``python -m rna_train.bench.worker SPEC``), ``workload`` holds the measured executions; the trainer
side calls :class:`rna_train.step.TrainStep`, the trainer's own step. Scripts for the GPU and the
70B estimate are in ``experiments/bench/`` (figures in docs/benchmarks.md).
"""
