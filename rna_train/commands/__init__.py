"""Subcommands of the ``rna`` command line (registered in :mod:`rna_train.cli`)."""
