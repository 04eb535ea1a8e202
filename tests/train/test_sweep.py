"""`rna sweep`: grid parsing, every point checked first, resume after an interruption, intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import train_helpers as helpers
import yaml
from scipy import stats

from rna_theory.errors import RNAError
from rna_train import sweep
from rna_train.trainer import train


def test_grid_axes_fixed_values_and_brackets() -> None:
    grid = sweep.parse_grid(["rna.noise.nu=0.01,0.03", "seed=0,1,2", "train.lr=1e-3",
                             "model.trainable.layers=[0, 1]", "data.forget.0.weight=1,2"])
    assert grid.axes == {"rna.noise.nu": ["0.01", "0.03"], "seed": ["0", "1", "2"], "data.forget.0.weight": ["1", "2"]}
    assert grid.fixed == ["train.lr=1e-3", "model.trainable.layers=[0, 1]"]
    assert len(grid.points()) == 12
    layers = sweep.parse_grid(["model.trainable.layers=[0,1],[1,2]"]).axes
    assert layers == {"model.trainable.layers": ["[0,1]", "[1,2]"]}
    assert sweep.run_name({"rna.noise": "{nu: 1}", "seed": "0"}) == "rna.noise=_nu__1_,seed=0"


@pytest.mark.parametrize(("items", "message"), [(["seed=0,1", "seed=2,3"], "given twice"),
                                                (["train.lr=1e-3"], "nothing to sweep"),
                                                (["seed=0,,1"], "empty value"),
                                                (["seed=0,0"], "repeated value"),
                                                (["output_dir=a,b"], "set by the sweep"),
                                                (["seed"], "no '='")])
def test_bad_grids_are_refused(items: list[str], message: str) -> None:
    with pytest.raises(RNAError, match=message):
        sweep.parse_grid(items)


@pytest.fixture
def config(tmp_path: Path, assets: dict[str, Path]) -> Path:
    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "unused", rna={"mode": "target", "noise": 0.05},
                             steps=2, checkpoint_every=1, tracker="none")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_interrupted_sweep_resumes_and_summarises(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    grid = ["rna.noise.nu=0.0,0.1", "seed=0,1"]
    calls: list[tuple[str, bool]] = []

    def interrupted(cfg, options, resume=False):
        calls.append((Path(cfg.output_dir).name, resume))
        if len(calls) == 3:  # the third run stops after its first step (a checkpoint is on disk)
            from rna_train import trainer

            save = trainer._save_periodic

            def stop(run, step):
                save(run, step)
                raise KeyboardInterrupt

            trainer._save_periodic = stop
            try:
                return train(cfg, options, resume=resume)
            finally:
                trainer._save_periodic = save
        return train(cfg, options, resume=resume)

    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(config, grid, out, metrics=["forget", "retain"], train_fn=interrupted)
    calls.clear()

    def counted(cfg, options, resume=False):
        calls.append((Path(cfg.output_dir).name, resume))
        return train(cfg, options, resume=resume)

    summary = sweep.run_sweep(config, grid, out, metrics=["forget", "retain"], train_fn=counted)
    assert calls == [("rna.noise.nu=0.1,seed=0", True), ("rna.noise.nu=0.1,seed=1", False)]
    assert [r["status"] for r in summary["runs"]] == ["done"] * 4
    group = next(g for g in summary["groups"] if g["point"] == {"rna.noise.nu": "0.1"})
    finals = [json.loads((out / "runs" / f"rna.noise.nu=0.1,seed={s}" / "metrics.jsonl").read_text()
                         .splitlines()[-1])["retain"] for s in (0, 1)]
    mean = sum(finals) / 2
    sd = abs(finals[0] - finals[1]) / math.sqrt(2)  # n = 2: t interval of half-width t_{0.975,1} sd / sqrt(2)
    assert group["retain"]["mean"] == pytest.approx(mean) and group["retain"]["n"] == 2
    width = 2 * stats.t.ppf(0.975, 1) * sd / math.sqrt(2)
    assert group["retain"]["high"] - group["retain"]["low"] == pytest.approx(width)
    assert (out / "summary.png").stat().st_size > 0 and "| rna.noise.nu |" in (out / "summary.md").read_text()
    with pytest.raises(RNAError, match="another config or grid"):
        sweep.run_sweep(config, ["rna.noise.nu=0.0,0.1", "seed=0,1", "train.lr=0.5"], out)
    with pytest.raises(RNAError, match="another config or grid"):
        sweep.run_sweep(config, ["rna.noise.nu=0.0,0.1", "train.lr=0.5,0.6"], out)


def test_every_point_is_checked_before_the_first_run(config: Path, tmp_path: Path) -> None:
    with pytest.raises(RNAError) as info:
        sweep.run_sweep(config, ["rna.noise.nu=0.05,-1"], tmp_path / "sweep")
    assert str(info.value.where).startswith("rna.noise")
    assert not (tmp_path / "sweep").exists()


def test_cli_runs_and_summarises(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rna_train.cli import main

    out = tmp_path / "s"
    assert main(["sweep", "--config", str(config), "--out", str(out), "seed=0,1", "--metric", "forget"]) == 0
    assert "| forget |" in capsys.readouterr().out
    assert main(["sweep", "--summary-only", "--out", str(out), "--metric", "nosuch"]) == 2
    assert "metric 'nosuch' is not in" in capsys.readouterr().err


def test_run_folder_template_values_added_on_rerun_and_only(config: Path, tmp_path: Path) -> None:
    """``run_folder="seed-{seed}"`` puts the runs at OUT/seed-N (a :class:`Grid` may hold one value per
    axis); a rerun with another seed trains only that one, and the record and summary keep every seed;
    ``only`` trains the accepted points of a grid, the others stay "missing"; the summary alone
    (``rna sweep --summary-only``) finds the runs there too."""
    out = tmp_path / "variant"
    calls: list[str] = []

    def counted(cfg, options, resume=False):
        calls.append(Path(cfg.output_dir).name)
        return train(cfg, options, resume=resume)

    def run(items, only=None):
        return sweep.run_sweep(config, items, out, metrics=["forget"], run_folder="seed-{seed}", only=only,
                               train_fn=counted)

    assert run(sweep.Grid({"seed": ["1"]}, []))["runs"][0]["status"] == "done"
    assert calls == ["seed-1"] and (out / "seed-1" / "DONE").is_file() and not (out / "runs").exists()
    summary = run(["seed=0,2"], only=lambda point: point["seed"] == "0")
    assert calls == ["seed-1", "seed-0"]
    assert json.loads((out / "sweep.json").read_text())["axes"] == {"seed": ["1", "0", "2"]}
    assert [(r["point"]["seed"], r["status"]) for r in summary["runs"]] == [("1", "done"), ("0", "done"),
                                                                            ("2", "missing")]
    assert summary["groups"][0]["forget"]["n"] == 2 and (out / "summary.png").stat().st_size > 0  # runs vs seed
    assert "not finished: seed=2" in (out / "summary.md").read_text()
    assert run(["seed=0,1"])["groups"] == summary["groups"] and calls == ["seed-1", "seed-0"]  # both done
    assert sweep.summarize(out, metrics=["forget"])["groups"] == summary["groups"]
    with pytest.raises(RNAError, match="another config or grid"):
        sweep.run_sweep(config, ["seed=0,1"], out, metrics=["forget"], train_fn=counted)  # another run_folder


def test_run_folders_are_checked_before_any_run(config: Path, tmp_path: Path) -> None:
    """Unknown placeholders, and templates giving two points (also of an earlier invocation) one folder, are refused."""
    point = {"rna.noise": "{nu: 1}", "seed": "0"}
    assert sweep.point_folder(point, "x/{rna.noise}-{seed}") == "x/_nu__1_-0"
    assert sweep.point_folder(point) == "runs/rna.noise=_nu__1_,seed=0"
    with pytest.raises(RNAError, match="not a swept key"):
        sweep.point_folder(point, "{nosuch}")
    out = tmp_path / "s"
    with pytest.raises(RNAError, match="the same folder"):
        sweep.run_sweep(config, ["rna.noise.nu=0.0,0.1", "seed=0,1"], out, run_folder="seed-{seed}")
    assert not out.exists()
    skip = lambda cfg, options, resume=False: None  # noqa: E731 (no training needed)
    sweep.run_sweep(config, sweep.Grid({"rna.noise.nu": ["0.0"], "seed": ["0"]}, []), out, run_folder="seed-{seed}",
                    train_fn=skip)
    with pytest.raises(RNAError, match="the same folder"):
        sweep.run_sweep(config, sweep.Grid({"rna.noise.nu": ["0.1"], "seed": ["0"]}, []), out,
                        run_folder="seed-{seed}", train_fn=skip)


def test_cli_shards_and_run_folder(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--shard 0/2`` and ``1/2`` train disjoint halves of the grid (the first lists the other half as
    not finished), together all of it; ``--run-folder`` names the folders; a bad shard is refused."""
    from rna_train.cli import main

    out = tmp_path / "s"
    args = ["sweep", "--config", str(config), "--out", str(out), "seed=0,1,2", "--run-folder", "seed-{seed}",
            "--metric", "forget"]
    assert main([*args, "--shard", "0/2"]) == 0
    assert sorted(p.name for p in out.glob("seed-*")) == ["seed-0", "seed-2"]
    assert "not finished: seed=1" in capsys.readouterr().out
    assert main([*args, "--shard", "1/2"]) == 0
    assert all((out / f"seed-{s}" / "DONE").is_file() for s in range(3))
    assert "not finished" not in capsys.readouterr().out
    assert main([*args, "--shard", "2/2"]) == 2
    assert "shard '2/2' is not I/N" in capsys.readouterr().err
