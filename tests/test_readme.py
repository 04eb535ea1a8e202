"""The README's commands run as written: the Python API example, and the `rna` lines of "Common
commands" that need no real assets (the others are parsed by the CLI, and `rna unlearn`'s config and
overrides are validated, which loads no model)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str, after: str) -> list[str]:
    """Fenced ``language`` blocks of the README section whose heading is ``after``."""
    section = README.split(f"## {after}", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def _rna_lines() -> list[list[str]]:
    """The ``rna ...`` commands of "Common commands" (continuation lines joined, comments dropped)."""
    text = _blocks("bash", "Common commands")[0].replace("\\\n", " ")
    lines = [line.split("  #")[0].strip() for line in text.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("rna ")]


def test_the_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = _blocks("python", "Python API (a notebook)")
    assert code.count("\n") <= 12, "the notebook example is meant to stay short"
    monkeypatch.chdir(ROOT)
    out = tmp_path / "notebook"
    namespace: dict[str, object] = {}
    exec(compile(code.replace('"runs/notebook"', repr(str(out))), "README.md", "exec"), namespace)
    run, fragility = namespace["run"], namespace["fragility"]
    assert (out / "DONE").is_file() and len(run.metrics) == 10  # type: ignore[attr-defined]
    assert set(fragility["effect"]["nll"]) == {"forget", "control"}  # type: ignore[index]
    exec(compile(code.replace('"runs/notebook"', repr(str(out))), "README.md", "exec"), {})  # overwrite=True


def test_every_common_command_parses_and_the_asset_free_ones_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from rna_train.cli import build_parser, main
    from rna_train.config import load_config

    monkeypatch.chdir(ROOT)
    commands = _rna_lines()
    assert len(commands) >= 8
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # SystemExit (argparse error) fails the test
        if argv[0] == "unlearn":
            config = argv[argv.index("--config") + 1]
            cfg, _ = load_config(config, [a for a in argv[argv.index("--config") + 2:] if "=" in a])
            assert cfg.rna.noise.nu == 0.03
    runnable = [a for a in commands if a[0] == "methods" or (a[0] == "tune" and "--eta" in a)]
    assert len(runnable) == 2
    for argv in runnable:
        assert main(argv) == 0
