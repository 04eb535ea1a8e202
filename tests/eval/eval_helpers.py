"""Shared helpers for the evaluation tests: the 12-question probe and in-process ``rna`` runs."""

from __future__ import annotations

import argparse
import importlib
import random
import shutil

from rna_theory.errors import RNAError

#: Headless chromium for the report screenshot tests (None: those tests are skipped).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

#: The test probe (one question and subject carry HTML tags that reports must escape).
PROBE = [
    {"question": "What is the capital of France?", "choices": ["Paris", "Rome", "Berlin", "Madrid"],
     "answer": 0, "subject": "geography"},
    {"question": "Which planet is known as the red planet?",
     "choices": ["Venus", "Mars", "Jupiter", "Saturn"], "answer": 1, "subject": "astronomy"},
    {"question": "Is <script>alert(1)</script> a safe string?", "choices": ["yes", "no"], "answer": 1,
     "subject": "<b>security</b>"},
    {"question": "How many legs does a spider have?", "choices": ["six", "ten", "eight", "four"],
     "answer": 2, "subject": "biology"},
    {"question": "Which gas do plants absorb from the air?", "choices": ["oxygen", "carbon dioxide",
     "nitrogen", "helium"], "answer": 1, "subject": "biology"},
    {"question": "Who wrote the play Hamlet?", "choices": ["Shakespeare", "Dickens", "Austen", "Homer"],
     "answer": 0, "subject": "literature"},
    {"question": "What is two plus two?", "choices": ["three", "four", "five", "six"], "answer": 1,
     "subject": "math"},
    {"question": "Which ocean is the largest on Earth?", "choices": ["Atlantic", "Indian", "Arctic",
     "Pacific"], "answer": 3, "subject": "geography"},
    {"question": "Which metal is liquid at room temperature?", "choices": ["iron", "mercury", "gold",
     "silver"], "answer": 1, "subject": "chemistry"},
    {"question": "What do bees make from nectar?", "choices": ["milk", "honey", "silk", "wax"], "answer": 1,
     "subject": "biology"},
    {"question": "How many days are in a leap year?", "choices": ["365", "366", "364", "360"], "answer": 1,
     "subject": "math"},
    {"question": "Which instrument has black and white keys?", "choices": ["violin", "drum", "piano",
     "flute"], "answer": 2, "subject": "music"},
]



def rna(*argv: str) -> int:
    """Run ``rna ARGV`` through the command's own parser; RNAError propagates to the test.

    Uses only the named command's module so these tests do not depend on other subcommands.
    """
    from rna_train.cli import COMMANDS

    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"rna {name}")
    module.add_arguments(parser)
    args = parser.parse_args(list(argv[1:]))
    args.command = name
    return module.run(args)


__all__ = ["CHROMIUM", "FLAGS", "PROBE", "RNAError", "rna"]


#: Words of the synthetic "Wikipedia" (:func:`wiki_docs`): the forget side's topic, the retain side's, filler.
WIKI_TOPIC = [f"bioword{c}{d}" for c in "abcdefgh" for d in "xyzw"][:36]
WIKI_OTHER = [f"civic{c}{d}" for c in "abcdefghij" for d in "xyzw"][:40]
WIKI_FILLER = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by", "at", "from"]


def wiki_docs(words: list[str], n: int, seed: int) -> list[str]:
    """``n`` 110-word documents: half filler words, half ``words``."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WIKI_FILLER) if rng.random() < 0.5 else rng.choice(words) for _ in range(110))
            for _ in range(n)]
