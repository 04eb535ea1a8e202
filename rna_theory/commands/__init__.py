"""CLI subcommands of the theory module (registered in :mod:`rna_train.cli`)."""
