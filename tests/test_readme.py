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
    from rna_train.config import load_config, parse_override, to_dict
    from rna_train.sweep import parse_grid

    monkeypatch.chdir(ROOT)
    commands = _rna_lines()
    assert len(commands) >= 8
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # SystemExit (argparse error) fails the test
        if argv[0] in ("unlearn", "sweep"):
            config = argv[argv.index("--config") + 1]
            items = [a for a in argv[argv.index("--config") + 2:] if "=" in a]
            if argv[0] == "sweep":  # the first point of the grid
                grid = parse_grid(items)
                items = grid.fixed + [f"{k}={v}" for k, v in grid.points()[0].items()]
            cfg, _ = load_config(config, items)
            resolved = to_dict(cfg)
            for item in items:  # every override reached the config
                key, value = parse_override(item)
                node = resolved
                for part in key.split("."):
                    node = node[part]
                assert node == value, (item, node)
    runnable = [a for a in commands if a[0] == "methods" or (a[0] == "tune" and "--eta" in a)]
    assert len(runnable) == 2
    for argv in runnable:
        assert main(argv) == 0


def _docs_rna_lines() -> list[tuple[str, list[str]]]:
    """Every ``rna ...`` command in docs/*.md code (fenced or indented), continuation lines joined;
    syntax summaries (``[--opt]``, ``a|b``) are skipped."""
    out = []
    for path in sorted((ROOT / "docs").glob("*.md")):
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in text.splitlines():
            command = line.split("  #")[0].strip()
            if re.match(r"rna [a-z]", command) and not re.search(r"[\[|(]|\.\.\.", command):
                out.append((path.name, shlex.split(command)[1:]))
    return out


def test_every_docs_command_parses() -> None:
    from rna_train.cli import build_parser

    parser = build_parser()
    commands = _docs_rna_lines()
    assert len(commands) >= 10
    for name, argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{name}: `rna {' '.join(argv)}` does not parse")
