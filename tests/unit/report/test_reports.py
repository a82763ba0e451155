"""What the detector decides, image by image (issue 31): dlsr-eval's STEM.html and dlsr-score
--report, checked as files and as a browser renders them; the plots' axis choice; the notes."""

import re

import numpy as np
import pytest

from dlsr_deploy.report import svg
from dlsr_deploy.report.eval_report import EvalView, eval_page


def test_the_axis_shows_both_sets_where_a_tail_is_long():
    r = np.random.default_rng(0)
    id_s, ood_s = r.normal(10, 1, 500), r.normal(14, 2, 500)
    assert svg.axis_for(np.concatenate([id_s, ood_s]), [id_s, ood_s]) == "linear"
    id_s, ood_s = r.lognormal(6, 0.2, 500), r.lognormal(8, 1.0, 500)  # Mahalanobis-like: positive, long tail
    assert svg.axis_for(np.concatenate([id_s, ood_s]), [id_s, ood_s]) == "log"
    id_s, ood_s = -1 + r.exponential(0.001, 500), -1 + r.exponential(0.1, 500)  # MFsim-like: negative, long tail
    assert svg.axis_for(np.concatenate([id_s, ood_s]), [id_s, ood_s]) == "rank"
    ax = svg.Axis("rank", np.concatenate([id_s, ood_s]))
    assert ax.pos(np.median(np.concatenate([id_s, ood_s]))) == pytest.approx(0.5, abs=0.01)


def _view(**over):
    r = np.random.default_rng(1)
    ids = {"good": r.normal(0, 1, 60), "lr": r.normal(0, 1, 60)}
    ood = {"far": {"good": r.normal(3, 1, 30), "lr": r.normal(-3, 1, 30)}}
    metrics = {
        "good": {"far": {"auroc": 0.97, "auroc_lo": 0.95, "auroc_hi": 0.99, "fpr95": 0.1}, "mean": {"auroc": 0.97}},
        "lr": {"far": {"auroc": 0.03, "fpr95": 1.0}, "mean": {"auroc": 0.03}},
    }
    v = dict(headline="good", how="given", thresholds={"good": 1.6, "lr": 1.6}, centers={"good": 0.0, "lr": 0.0},
             calibrated_on="held-out ID images (60)", target_tpr=0.95, id_scores=ids, ood_scores=ood, metrics=metrics,
             id_images=r.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8),
             ood_images={"far": r.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)}, plot_scores=["lr"])  # fmt: skip
    return EvalView(**{**v, **over})


def test_the_eval_page_leads_with_the_headline_and_notes_inverted_scores():
    page = eval_page(_view())
    blocks = re.findall(r'class="score-block" data-score="([^"]+)"', page)
    assert blocks == ["good", "lr"]  # the headline first, then --plot-scores
    assert page.index('class="threshold"') < page.index('data-score="lr"')  # the headline's plot has the line
    assert "lr is inverted on far (AUROC 3.00 &lt; 50)" in page and "good is inverted" not in page
    assert page.count('<figure class="over">') + page.count('<figure class="under">') == 24  # 12 + 12
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")


@pytest.fixture(scope="module")
def eval_report(tiny_run, tmp_path_factory):
    from dlsr_deploy.config import ScoreConfig
    from dlsr_deploy.eval_pipeline import run_eval

    run, id_path, ood_path = tiny_run
    out = tmp_path_factory.mktemp("eval-report")
    res = run_eval(run, str(id_path.parent / "id_unseen.npz"), [("noise", str(ood_path))], [ScoreConfig()],
                   out_dir=out, probes=10, n_boot=20, plot_scores=["mfsim"])  # fmt: skip
    return res, out, run


def test_dlsr_eval_writes_a_self_contained_html_report(eval_report):
    res, out, run = eval_report
    page = (out / "eval.html").read_text()
    head = res["headline"]["score"]
    assert re.findall(r'class="score-block" data-score="([^"]+)"', page)[:2] == [head, "mfsim"]
    assert res["headline"]["calibrated_on"].startswith("held-out ID images")
    assert f"threshold {res['headline']['threshold']:.4g}" in page
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == 12 + 12  # 24 ID, 40 OOD: 12 each
    assert str(run) not in page and str(out) not in page  # no machine paths
    assert (out / "eval.png").stat().st_size > 0


def test_the_eval_report_renders_in_chromium(eval_report, tmp_path):
    from browser import chromium

    res, out, _ = eval_report
    d = chromium()
    try:
        d.get((out / "eval.html").as_uri())
        first = d.find_elements("css selector", "section.score-block")[0]
        assert first.get_attribute("data-score") == res["headline"]["score"]
        assert first.find_elements("css selector", "svg line.threshold")
        imgs = d.find_elements("css selector", ".gallery img")
        assert len(imgs) == 24 and all(d.execute_script("return arguments[0].naturalWidth", i) > 0 for i in imgs)
        assert d.find_elements("css selector", "section.probes svg")
        assert d.save_screenshot(str(tmp_path / "report.png")) and (tmp_path / "report.png").stat().st_size > 10_000
    finally:
        d.quit()


def test_dlsr_score_report_shows_the_most_ood_images_first(bundles, tiny_run, tmp_path):
    from dlsr_deploy.cli.score_job import score_inputs

    _, id_path, ood_path = tiny_run
    res = score_inputs(bundles["fp32"], [str(ood_path), str(id_path.parent / "id_unseen.npz")], backend="ort-cpu",
                       out=tmp_path / "rows.csv", report=tmp_path / "day.html")  # fmt: skip
    page = (tmp_path / "day.html").read_text()
    rows = res["rows"]
    over = int(re.search(r'data-over="(\d+)" data-n="(\d+)"', page).group(1))
    assert over == sum(r["is_ood"] for r in rows) and f'data-n="{len(rows)}"' in page
    col = next(k for k in rows[0] if k.startswith("score_"))
    top = sorted(rows, key=lambda r: -r[col])[:24]
    shown = re.findall(r"<figcaption>([^<]+)<br>score ([^<]+)<br>", page)
    assert [s[0] for s in shown] == [r["image"].split("/")[-1][:18] for r in top]
    assert "ID calibration" in page and str(tmp_path) not in page


def test_unknown_plot_scores_fail_before_any_feature_is_computed(tiny_run, tmp_path):
    from click.testing import CliRunner

    from dlsr_deploy.cli import evaluate

    run, id_path, ood_path = tiny_run
    args = ["--model", str(run), "--id", str(id_path), "--ood", str(ood_path), "--out", str(tmp_path / "ev")]
    r = CliRunner().invoke(evaluate, args + ["--plot-scores", "mfsim,nope"])
    assert r.exit_code == 1 and "--plot-scores" in r.output and "'nope'" in r.output and "mfsim" in r.output
    r = CliRunner().invoke(evaluate, args + ["--headline", "maha_ridg"])
    assert r.exit_code == 1 and "--headline" in r.output
    assert not (tmp_path / "ev").exists() and not any(p.is_file() for p in (tmp_path / "dlsr-cache").rglob("*"))


def test_a_missing_set_fails_before_any_feature_is_computed(tiny_run, tmp_path):
    from click.testing import CliRunner

    from dlsr_deploy.cli import evaluate

    run, id_path, ood_path = tiny_run
    args = ["--model", str(run), "--id", str(id_path), "--ood", f"a={ood_path}", "--ood", f"b={tmp_path / 'typo.npz'}"]
    r = CliRunner().invoke(evaluate, args + ["--out", str(tmp_path / "ev")])
    assert r.exit_code == 1 and "--ood: input not found" in r.output and "typo.npz" in r.output
    r = CliRunner().invoke(evaluate, ["--model", str(run), "--id", str(tmp_path / "nope.npz"), "--ood", str(ood_path)])
    assert r.exit_code == 1 and "--id: input not found" in r.output
    assert not (tmp_path / "ev").exists() and not any(p.is_file() for p in (tmp_path / "dlsr-cache").rglob("*"))


def test_dlsr_score_report_through_the_cli(bundles, tiny_run, tmp_path):
    from click.testing import CliRunner

    from dlsr_deploy.cli import score

    _, _, ood_path = tiny_run
    base = [str(bundles["fp32"]), str(ood_path), "--backend", "ort-cpu", "--quiet", "--out", str(tmp_path / "r.csv")]
    r = CliRunner().invoke(score, base + ["--report", str(tmp_path / "day.html")])
    assert r.exit_code == 0, r.output
    assert 'class="summary"' in (tmp_path / "day.html").read_text()
    r = CliRunner().invoke(score, base + ["--report", str(tmp_path / "r.csv")])  # the report over the rows
    assert r.exit_code != 0 and "--report and --out name the same file" in r.output
    before = ood_path.read_bytes()
    r = CliRunner().invoke(score, base + ["--report", str(ood_path)])  # never over an input
    assert r.exit_code == 1 and r.output.startswith("error: --report") and ood_path.read_bytes() == before


def test_dlsr_eval_never_writes_over_or_into_its_inputs(tiny_run, tmp_path):
    import shutil

    from click.testing import CliRunner
    from PIL import Image

    from dlsr_deploy.cli import evaluate

    run, id_path, ood_path = tiny_run
    pack = tmp_path / "ev_scores.npz"  # what --stem ev would write as its scores
    shutil.copy(ood_path, pack)
    before = pack.read_bytes()
    args = ["--model", str(run), "--id", str(id_path), "--ood", str(pack), "--out", str(tmp_path), "--stem", "ev"]
    r = CliRunner().invoke(evaluate, args)
    assert r.exit_code == 1 and r.output.startswith("error: --out") and pack.read_bytes() == before
    folder = tmp_path / "ood_images"
    folder.mkdir()
    for i, im in enumerate(np.load(ood_path)["images"][:3]):
        Image.fromarray(im).save(folder / f"{i}.png")
    r = CliRunner().invoke(evaluate, ["--model", str(run), "--id", str(id_path), "--ood", str(folder),
                                      "--out", str(folder / "report")])  # fmt: skip
    assert r.exit_code == 1 and "--out" in r.output and not (folder / "report").exists()
