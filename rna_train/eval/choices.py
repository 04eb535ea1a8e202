"""Option values shared by the evaluation modules and the CLI, in a module that imports nothing heavy
(``rna --help`` must not load torch)."""

#: Which paired latents an audit saves: at the keyword's offset, the last token, or mean-pooled.
ALIGNMENTS: tuple[str, ...] = ("offset", "last", "mean")
#: Multiple-choice scorings: answer-text log-likelihood, its per-token mean, or the answer letter.
SCORINGS: tuple[str, ...] = ("loglik", "loglik_norm", "letter")
