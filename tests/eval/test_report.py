"""Reports from real run directories (rna eval + rna audit on tiny models), rendered in chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from eval_helpers import CHROMIUM, FLAGS, rna

from rna_theory.errors import RNAError
from rna_train.eval.report import write_report


@pytest.fixture(scope="module")
def runs(llama_dir, llama2_dir, probe_file, tmp_path_factory) -> list[Path]:
    """Two run directories: a 'base' and an 'unlearned' model, each with eval + audit output.

    The first is labelled with a <script> tag (it must come out escaped); the second also carries
    a trainer-style config.yaml and metrics.jsonl (RNA with nu = 0.05).
    """
    dirs = []
    for i, model in enumerate((llama_dir, llama2_dir)):
        out = tmp_path_factory.mktemp(f"run{i}")
        if i == 1:
            (out / "config.yaml").write_text("method: {name: rmu}\nrna: {mode: target, noise: 0.05}\n")
            rows = [{"step": s + 1, "topic": "bio", "forget": 1.0 / (s + 1), "retain": 0.1, "loss": 1.1,
                     "lr": 5e-5, "nu": 0.05} for s in range(5)]  # the trainer's metrics.jsonl keys
            (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            (out / "config.yaml").write_text("method: {name: rmu}\nrna: {mode: 'off'}\n")
        label = ["--label", "base <script>alert(1)</script>"] if i == 0 else []
        keywords = "bio"
        if i == 1:  # a hostile keyword list: every string from it must come out escaped
            keywords = str(out / "hostile.txt")
            Path(keywords).write_text('"><img src=x onerror=alert(2)>\n')
        assert rna("eval", "--model", str(model), "--probe", str(probe_file), "--perturb", "insert",
                   "--keywords", keywords, "--scoring", "loglik,letter", "--out", str(out), *label) == 0
        assert rna("audit", "--model", str(model), "--probe", str(probe_file), "--layer", "0",
                   "--keywords", "bio", "control", "--out", str(out)) == 0
        dirs.append(out)
    return dirs


def test_run_directory_files(runs):
    ev = json.loads((runs[0] / "eval.json").read_text())
    assert ev["format"] == "rna-eval/1" and ev["primary"] == "loglik" and ev["n_questions"] == 12
    assert ev["perturbation"]["keyword_kind"] == "bio" and ev["perturbation"]["seed"] == 0
    rob = ev["results"]["loglik"]["robustness"]
    assert set(rob) == {"unchanged", "clean_accuracy", "perturbed_accuracy", "accuracy_drop"}
    records = [json.loads(line) for line in (runs[0] / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 12
    for rec in records:
        pert = rec["perturbation"]
        assert rec["perturbed_question"][pert["start"]:pert["end"]] == pert["keyword"]
        assert set(rec["clean"]) == {"loglik", "letter"}
    # the audit found the nu of the trained run in its config.yaml
    audit = json.loads((runs[1] / "audit.json").read_text())
    assert audit["keywords"]["bio"]["predicted"]["noise"]["nu"] == 0.05


def test_report_markdown_and_html(runs, tmp_path):
    md, page = write_report(runs, tmp_path / "report", title="Report <i>1</i>")
    text = md.read_text()
    for heading in ("## Accuracy, clean vs. perturbed", "## Latent audit (Assumption 1, C1)",
                    "## Latent differences vs. the fitted Gaussian", "## Predicted vs. measured robustness",
                    "## Noise-scale (nu) ablation", "## Training losses", "## Accuracy per subject",
                    "## Keyword effect: forget vs. control"):
        assert heading in text
    assert "rmu +RNA(nu=0.05)" in text
    assert "<script>" not in text and "&lt;script&gt;" in text and "&lt;b&gt;security&lt;/b&gt;" in text
    assert "<img" not in text and "onerror=alert(2)&gt;" in text
    for name in re.findall(r"\(figures/([\w]+)\.png\)", text):
        assert (tmp_path / "report" / "figures" / f"{name}.png").stat().st_size > 1000
    source = page.read_text()
    assert "<script" not in source and "http" not in source.replace("http://www.w3.org", "")
    assert source.count("data:image/png;base64,") == 5


def test_report_from_eval_output_alone(runs, tmp_path):
    only = tmp_path / "only-eval"
    only.mkdir()
    for name in ("eval.json", "predictions.jsonl"):
        shutil.copy(runs[0] / name, only / name)
    md, _ = write_report([only], tmp_path / "r")
    assert "## Accuracy, clean vs. perturbed" in md.read_text()
    assert "Latent audit" not in md.read_text()


def test_duplicate_labels_are_told_apart(runs, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(runs[1], twin)
    md, _ = write_report([runs[1], twin], tmp_path / "r")
    text = md.read_text()
    assert f"rmu +RNA(nu=0.05) [{runs[1].name}]" in text and "rmu +RNA(nu=0.05) [twin]" in text


def test_eval_folder_inside_a_training_run_takes_its_config(runs, tmp_path):
    from rna_train.eval.report import load_run

    for seed in (0, 1):
        inner = tmp_path / f"seed-{seed}" / "eval-retain"
        shutil.copytree(runs[1], inner)
        (inner / "config.yaml").rename(inner.parent / "config.yaml")
        (inner / "metrics.jsonl").rename(inner.parent / "metrics.jsonl")  # the trainer writes it there
    a, b = (load_run(tmp_path / f"seed-{s}" / "eval-retain") for s in (0, 1))
    assert a.label == b.label == "rmu +RNA(nu=0.05)" and a.nu == 0.05
    assert len(a.metrics) == 5  # the training run's loss curves reach the report
    md, _ = write_report([a.path, b.path], tmp_path / "r")
    assert "rmu +RNA(nu=0.05) [seed-0/eval-retain]" in md.read_text()


def test_report_needs_run_output(tmp_path):
    with pytest.raises(RNAError, match=r"no eval\.json, audit\.json or lmeval\.json"):
        write_report([tmp_path], tmp_path / "r")
    with pytest.raises(RNAError, match="does not exist"):
        rna("report", str(tmp_path / "missing"), "--out", str(tmp_path / "r"))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    from PIL import Image

    assert rna("report", *map(str, runs), "--out", str(tmp_path / "report")) == 0
    page = (tmp_path / "report" / "report.html").resolve()
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert "<h1>RNA robustness report</h1>" in dom
    assert dom.count("<h2>") >= 8 and dom.count("<img ") == 5 and dom.count("<table>") >= 4
    assert "<script" not in dom and "onerror=" not in dom.replace("onerror=alert(2)&gt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and "&lt;b&gt;security&lt;/b&gt;" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("L")
    low, high = image.getextrema()
    assert image.size == (1200, 2400) and high - low > 100  # something (text, plots) was drawn


def test_ablation_keeps_probes_apart():
    """RMU's clean accuracy on the forget probe (0.283) and on the retain probe (0.944) are two series:
    averaging them (0.61) was a wrong number in the nu-ablation figure."""
    from pathlib import Path

    from rna_train.eval.report import Run
    from rna_train.eval.units.probe_accuracy import _ablation_rows

    def run(probe: str, clean: float, nu: float) -> Run:
        result = {"clean": {"overall": {"rate": clean, "ci": [clean, clean], "n": 1}}}
        return Run(Path(probe), "rmu", {"method": "rmu", "nu": nu}, {"probe": f"/x/{probe}.jsonl", "primary": "loglik",
                                                                    "results": {"loglik": result}}, None, [], [])

    rows = _ablation_rows([run("forget", 0.283, 0.0), run("retain", 0.944, 0.0), run("forget", 0.5, 0.1)])
    by_metric = {(r["metric"], r["nu"]): r["value"] for r in rows}
    assert by_metric == {("clean (forget)", 0.0): 0.283, ("clean (retain)", 0.0): 0.944, ("clean (forget)", 0.1): 0.5}


def test_report_tables_match_hand_counts_from_the_predictions(runs):
    """Every number of the evaluation, subject, effect and accuracy-figure tables, recomputed by hand
    from the two runs' predictions.jsonl and audit.json."""
    from rna_train.eval.report import load_run
    from rna_train.eval.units.latent_audit import _effect_table
    from rna_train.eval.units.probe_accuracy import _accuracy_rows, _eval_table, _subject_table

    loaded = [load_run(r) for r in runs]
    eval_rows = {(row[0], row[3]): row for row in _eval_table(loaded).rows}
    subject = _subject_table(loaded)
    accuracy = {(r["run"], r["condition"]): r["rate"] for r in _accuracy_rows(loaded)}
    for run, folder in zip(loaded, runs, strict=True):
        records = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
        for scoring in ("loglik", "letter"):
            clean = sum(r["clean"][scoring]["pred"] == r["answer"] for r in records)
            pert = sum(r["perturbed"][scoring]["pred"] == r["answer"] for r in records)
            same = sum(r["clean"][scoring]["pred"] == r["perturbed"][scoring]["pred"] for r in records)
            row = eval_rows[(run.label, scoring)]
            assert row[4].startswith(f"{clean / 12:.3f}") and row[5].startswith(f"{pert / 12:.3f}")
            assert row[6].startswith(f"{same / 12:.3f}")
        clean = sum(r["clean"]["loglik"]["pred"] == r["answer"] for r in records)
        assert accuracy[(run.label, "clean")] == pytest.approx(clean / 12)
        col = subject.headers.index(f"{run.label}: clean")
        for row in subject.rows:
            mine = [r for r in records if r["subject"] == row[0]]
            k = sum(r["clean"]["loglik"]["pred"] == r["answer"] for r in mine)
            assert row[col].endswith(f"({k}/{len(mine)})")
        audit = json.loads((folder / "audit.json").read_text())
        for eff in (e for e in _effect_table([run]).rows):
            m = audit["keywords"][eff[1]]["measured"]
            drop = m["clean_accuracy"]["rate"] - m["perturbed_accuracy"]["rate"]
            assert float(eff[4]) == pytest.approx(drop, abs=5e-4)


def test_audit_table_columns_read_the_right_fields(runs):
    """Each audit-table column shows the field its header names (offset alignment, per keyword list)."""
    from rna_train.eval.report import fmt as _fmt
    from rna_train.eval.report import load_run
    from rna_train.eval.units.latent_audit import _audit_tables

    for folder in runs:
        run = load_run(folder)
        footprint, robustness = _audit_tables([run])
        audit = json.loads((folder / "audit.json").read_text())
        assert [r[:2] for r in footprint.rows] == [r[:2] for r in robustness.rows]
        assert len(footprint.headers) <= 11 and len(robustness.headers) <= 7  # each fits a screen
        col = {h: i for i, h in enumerate(footprint.headers + robustness.headers[2:])}
        for row in (f + r[2:] for f, r in zip(footprint.rows, robustness.rows, strict=True)):
            entry = audit["keywords"][row[col["keywords"]]]
            est = entry["estimators"]["offset"]
            assert row[col["eta"]] == _fmt(est["eta"]) and row[col["|mean shift|"]] == _fmt(est["mean_norm"])
            assert row[col["d"]] == str(est["dim"]) and row[col["layer"]] == "0"
            at_nu = entry["predicted"]["at_nu"] or {}
            assert row[col["predicted certified (C6b)"]] == _fmt(at_nu.get("certified"))
            assert row[col["tuner nu (C7)"]] == _fmt(entry["tuner"].get("recommended_nu"))


def test_figures_plot_the_runs_numbers(runs, monkeypatch):
    """The prediction and loss figures draw exactly the audit's curves, the measured rates and the
    metrics.jsonl values (the figure objects are inspected instead of their PNG)."""
    import rna_train.eval.report as report
    from rna_train.eval.units import latent_audit, training_curves

    monkeypatch.setattr(latent_audit, "png", lambda fig: fig)
    monkeypatch.setattr(training_curves, "png", lambda fig: fig)
    loaded = [report.load_run(r) for r in runs]
    fig = latent_audit._prediction_figure(loaded)
    lines = fig.axes[0].lines
    audit = json.loads((runs[0] / "audit.json").read_text())
    curve = audit["keywords"]["bio"]["predicted"]["curve"]
    assert list(lines[0].get_xdata()) == [c["nu"] for c in curve]
    assert list(lines[0].get_ydata()) == [c["certified"] for c in curve]
    assert list(lines[1].get_ydata()) == [c["first_order"] for c in curve]
    assert list(lines[2].get_ydata()) == [audit["keywords"]["bio"]["measured"]["unchanged"]["rate"]] * 2
    fig = training_curves._metrics_figure(loaded)
    rows = [json.loads(line) for line in (runs[1] / "metrics.jsonl").read_text().splitlines()]
    drawn = {line.get_label(): list(line.get_ydata()) for line in fig.axes[0].lines}
    label = loaded[1].label
    assert drawn[f"{label}: forget"] == [r["forget"] for r in rows]
    assert drawn[f"{label}: loss"] == [r["loss"] for r in rows]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_twelve_run_report_fits_a_1280px_window(runs, tmp_path):
    """A dozen runs (method x RNA mode x nu x seed, labelled from their configs): every label is on the
    page, nothing is wider than a 1280 px window, no table needs a horizontal scroll bar."""
    from PIL import Image

    folders = []
    for i in range(12):
        folder = tmp_path / "runs" / f"eval-{i}"  # folder names say nothing: labels must come from configs
        shutil.copytree(runs[1], folder)
        method = ("rmu", "npo", "simnpo")[i % 3]
        mode, nu = (("off", 0.0), ("target", 0.05), ("input", 0.1), ("target", 0.25))[i // 3]
        (folder / "config.yaml").write_text(yaml.safe_dump({"seed": i % 2, "method": {"name": method},
                                                            "rna": {"mode": mode, "noise": nu}}))
        folders.append(folder)
    assert rna("report", *map(str, folders), "--out", str(tmp_path / "report")) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    probe = ("<script>window.onload=()=>{const t=[...document.querySelectorAll('table')];"
             "document.title=JSON.stringify({page:document.documentElement.scrollWidth,"
             "scrolled:t.filter(x=>x.scrollWidth>x.clientWidth+1).length,tables:t.length,"
             "images:[...document.images].filter(i=>i.naturalWidth>0).length})}</script>")
    measured = tmp_path / "report" / "measured.html"
    measured.write_text(html.replace("</body>", probe + "</body>"))
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,4000"]
    dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", measured.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    sizes = json.loads(re.search(r"<title>(.*?)</title>", dom).group(1).replace("&quot;", '"'))
    assert sizes["page"] <= 1280, sizes
    assert sizes["scrolled"] == 0 and sizes["tables"] >= 4, sizes
    assert sizes["images"] >= 4, sizes
    for i in range(12):
        method = ("rmu", "npo", "simnpo")[i % 3]
        rna_part = ("", " +RNA(nu=0.05)", " +RNA-input(nu=0.1)", " +RNA(nu=0.25)")[i // 3]
        assert f"<td>{method}{rna_part} seed {i % 2}</td>" in dom, (method, rna_part)
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", measured.resolve().as_uri()], capture_output=True, timeout=120,
                   check=True)
    low, high = Image.open(shot).convert("L").getextrema()
    assert high - low > 100


def test_report_is_assembled_from_the_registry(runs, tmp_path, monkeypatch):
    """A report unit registered in one place appears in the report, placed by its order; the built-in
    units are the registry's report units."""
    from rna_train.eval import registry
    from rna_train.eval.document import Block

    assert [m.name for m in registry.reports()] == ["probe_accuracy", "lmeval_tasks", "latent_audit", "attack_tables",
                                                    "training_curves"]
    units = dict(registry.available())
    monkeypatch.setattr(registry, "_METRICS", units)
    registry.register_report("extra", lambda rs: [Block("h2", f"Extra section over {len(rs)} runs")], order=15,
                             directions={"x": "higher"})
    assert [m.name for m in registry.reports()][2] == "extra"
    write_report(runs, tmp_path / "r")
    page = (tmp_path / "r" / "report.md").read_text()
    assert page.index("## Accuracy, clean vs. perturbed") < page.index("## Extra section over 2 runs") \
        < page.index("## Latent audit")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_report("extra", lambda rs: [], order=1, directions={})
