"""One self-contained HTML report of every run directory: verdicts, checks with their reasons, and figures.

Reads ``<runs>/*/results.json`` and the figures they list; figures are embedded (base64), so the single file
can be moved or attached anywhere. A results.json that cannot be read (invalid JSON, empty, not an object, missing
``passed`` or ``checks``, ``checks`` not a list, a check without ``name`` or ``passed``) does not stop the report:
it becomes a row naming the file and the problem, and :func:`build_report` counts it in ``unreadable``.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

from stepwise.compare.checks import KINDS, summary_line
from stepwise.io import atomic_path, config_value

__all__ = ["CLAIMS", "UNCHECKED", "Report", "build_report", "build_run_report", "read_results"]


class Report(NamedTuple):
    """What :func:`build_report` wrote: the file, the runs read, how many passed every check, and how many
    results.json files could not be read (each a row of the report naming the file and the problem)."""

    path: Path
    runs: int
    passed: int
    unreadable: int


def read_results(path: Path) -> tuple[dict[str, Any] | None, str]:
    """``(results, "")`` for a readable results.json, else ``(None, problem)`` with what was found.

    Readable means a JSON object with a boolean ``passed`` and a list ``checks`` of objects, each with a string
    ``name`` and a boolean ``passed`` (``null`` for a check of kind ``reported``, which is not gated), and, when
    present, a ``kind`` among :data:`stepwise.compare.KINDS` (a check written before kinds existed has none and is
    shown as theory). Other fields are optional.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 text ({err.reason} at byte {err.start})"
    except OSError as err:
        return None, f"cannot be read ({type(err).__name__}: {err.strerror or err})"
    if not text.strip():
        return None, "empty file, expected a JSON object"
    try:
        res = json.loads(text)
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
    if not isinstance(res, dict):
        return None, f"holds a JSON {type(res).__name__}, expected an object"
    for key, kind, want in (("passed", bool, "true or false"), ("checks", list, "a list of checks")):
        if key not in res:
            return None, f"has no {key!r} field"
        if not isinstance(res[key], kind):
            return None, f"{key!r} is {json.dumps(res[key])[:60]}, expected {want}"
    for i, check in enumerate(res["checks"]):
        if not isinstance(check, dict):
            return None, f"check {i} is {json.dumps(check)[:60]}, expected an object"
        kind = check.get("kind", "theory")
        if kind not in KINDS:
            return None, f"check {i}'s 'kind' is {json.dumps(kind)[:60]}, expected one of {', '.join(KINDS)}"
        passed_type = (bool, type(None)) if kind == "reported" else bool
        passed_want = "true, false or null" if kind == "reported" else "true or false"
        for key, typ, want in (("name", str, "a string"), ("passed", passed_type, passed_want)):
            if key not in check:
                return None, f"check {i} has no {key!r} field"
            if not isinstance(check[key], typ):
                return None, f"check {i}'s {key!r} is {json.dumps(check[key])[:60]}, expected {want}"
    return res, ""


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _seconds(value: Any) -> str:
    return f"{value:.1f} s" if isinstance(value, (int, float)) and not isinstance(value, bool) else "&ndash;"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1500px;\
margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6em 0 1.2em 0;font-size:14px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{font-family:ui-monospace,monospace;text-align:right;white-space:nowrap}
.pass{color:#0a7a2f;font-weight:600} .fail{color:#b00020;font-weight:600} .rep{color:#555;font-weight:600}
section{border-top:2px solid #eee;margin-top:2em;padding-top:.5em}
img{max-width:100%;border:1px solid #eee} details{margin:.5em 0} pre{background:#f8f8f8;\
padding:.6em;overflow:auto;font-size:12px}
.reason{color:#555;font-size:13px}
"""


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return '<span class="rep">REPORTED</span>'
    return '<span class="pass">PASS</span>' if ok else '<span class="fail">FAIL</span>'


_KIND_TITLE = {
    "theory": "Theory predictions (a paper's prediction against the measurement)",
    "baseline": "Baselines beaten (the measurement against a null model)",
    "consistency": "Consistency identities (hold by construction: they test the code, not the paper)",
    "reported": "Reported, not gated (measured and shown; the reason says why it is not a verdict)",
}


_KINDS_LEGEND = (
    "Kinds of evidence: theory = a paper's prediction against the measurement (threshold from the theory's error "
    "terms or the numerics); baseline = the measurement beats a null model (threshold from the null's "
    "distribution); consistency = an identity that holds by construction (tests the code); reported = measured "
    "and shown, not gated (the reason says why). A run passes when it has a theory or baseline check and every "
    "theory, baseline and consistency check passes."
)


def _check_row(c: dict, causes: dict | None = None) -> str:
    from stepwise.compare.diagnose import CAUSES

    thr = c.get("threshold")
    thr = "&ndash;" if thr is None else f"{_fmt(c.get('op', ''))} {_fmt(thr)}"
    why = ""
    if c.get("kind") != "reported" and not c.get("passed") and isinstance(causes, dict) and causes.get(c["name"]):
        why = "<br><span class='fail'>why it failed: " + "; ".join(
            html.escape(CAUSES.get(str(k), str(k))) for k in causes[c["name"]]) + "</span>"
    return (
        f"<tr><td>{_verdict(c['passed'] if c.get('kind') == 'reported' else bool(c['passed']))}</td>"
        f"<td><b>{html.escape(c['name'])}</b><br><span class='reason'>{_fmt(c.get('description', ''))}</span>{why}</td>"
        f"<td class='num'>{_fmt(c.get('value', ''))}</td><td class='num'>{thr}</td>"
        f"<td class='reason'>{_fmt(c.get('reason', ''))}</td></tr>"
    )


def _check_tables(checks: list[dict], causes: dict | None = None) -> str:
    """The checks of one run grouped by kind of evidence, theory first, each group with its own table; a failed
    check shows the readings of :mod:`stepwise.compare.diagnose` that apply (``causes``: name -> cause keys)."""
    out = ""
    for kind in KINDS:
        group = [c for c in checks if c.get("kind", "theory") == kind]
        if not group:
            continue
        head = "reference" if kind == "reported" else "threshold"
        why = "why not gated" if kind == "reported" else "why this threshold"
        out += (
            f"<h3>{html.escape(_KIND_TITLE[kind])}</h3><table><tr><th>verdict</th><th>check</th><th>value</th>"
            f"<th>{head}</th><th>{why}</th></tr>{''.join(_check_row(c, causes) for c in group)}</table>"
        )
    return out


def _section(run_dir: Path, res: dict) -> str:
    cfg = _dict(res.get("config"))
    title = f"{res.get('experiment', run_dir.name)} &mdash; {html.escape(str(_setting(cfg, 'dataset', '')))}"
    figs = ""
    figures = res.get("figures", [])
    for name in figures if isinstance(figures, list) else []:
        path = run_dir / str(name)
        if path.is_file():
            figs += _embed(path, name)
    if res.get("figure_error"):
        figs += f"<p class='fail'>No figure: {html.escape(str(res['figure_error']))}</p>"
    dev = _dict(res.get("device"))
    meta = (
        f"device: {html.escape(str(dev.get('platform')))} ({html.escape(str(dev.get('kind')))} x{dev.get('count')}), "
        f"wall time {_seconds(res.get('wall_time_s'))}, created {html.escape(str(res.get('created')))}, "
        f"run directory <code>{html.escape(str(run_dir))}</code>"
    )
    return (
        f"<section id='{html.escape(run_dir.name)}'><h2>{_verdict(res['passed'])} {title}</h2>"
        f"<p><b>{html.escape(summary_line(res['checks']))}</b></p><p class='sub'>{meta}</p>"
        f"{figs}{_check_tables(res['checks'], _dict(res.get('summary')).get('failure_causes'))}"
        "<details><summary>config and versions</summary><pre>"
        f"{html.escape(json.dumps({'config': cfg, 'versions': res.get('versions')}, indent=2))}"
        "</pre></details></section>"
    )


def _embed(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def _setting(cfg: dict, name: str, default=None):
    """``io.config_value``, but ``default`` where several sub-configs hold ``name``: a report's labels never stop it."""
    try:
        return config_value(cfg, name, default)
    except ValueError:
        return default


def _network_label(cfg: dict) -> str:
    """The network and data of a deep run, e.g. ``mlp on digits`` or ``resnet10 (width 0.125) on patches``."""
    model = str(_setting(cfg, "model", "network"))
    blocks = _setting(cfg, "resnet_blocks")
    if model == "resnet18" and blocks not in (None, 2):
        model = f"resnet{2 + 8 * int(blocks)}"
    width, hidden = _setting(cfg, "width"), _setting(cfg, "hidden")
    if model == "mlp" and isinstance(hidden, list):
        model += f" {'-'.join(str(h) for h in hidden)}"
    elif model != "mlp" and isinstance(width, (int, float)) and not isinstance(width, bool):
        model += f" (width {width:g})"
    return f"{model} on {_setting(cfg, 'dataset', 'data')}"


def _side_by_side(runs: list[tuple[Path, dict]], folder: Path) -> str:
    """The deep runs' spectra next to each other (the BT / SimCLR / VICReg figure), drawn from their data: one figure
    per network and data set (the MLP on digits and the ResNet stand-in on patches are never mixed), each with two
    runs or more; a run is labelled by its loss."""
    from stepwise.plots.deep import plot_side_by_side

    groups: dict[str, list[tuple[Path, dict]]] = {}
    for d, r in runs:
        if str(r.get("experiment", "")).startswith("stepwise_deep/"):
            groups.setdefault(_network_label(_dict(r.get("config"))), []).append((d, r))
    out = ""
    for i, (network, deep) in enumerate(groups.items()):
        if len(deep) < 2:
            continue
        labels = [str(r["experiment"]).split("/", 1)[1] for _, r in deep]
        path = plot_side_by_side([d for d, _ in deep], labels, folder / f"stepwise_deep_side_by_side_{i}.png")
        verdicts = ", ".join(f"{lab} {_verdict(r['passed'])}" for lab, (_, r) in zip(labels, deep))
        out += (f"<section><h2>Deep networks, losses side by side: {html.escape(network)}</h2><p class='sub'>"
                f"{verdicts}</p>{_embed(path, 'side by side: ' + network)}</section>")
    return out


#: The papers and their claims, in the order the report shows them: (experiment name or prefix, paper, claim).
#: An experiment's ``results.json`` names it (``"stepwise_deep/simclr"`` matches the prefix ``"stepwise_deep"``).
CLAIMS: tuple[tuple[str, str, str], ...] = (
    ("linear_bt", "Simon et al. 2023", "Linear Barlow Twins learns the contrastive kernel's eigenmodes in steps "
     "at the closed-form times (Fig. 1A/B)"),
    ("kernel_bt", "Simon et al. 2023", "Kernel extension: a kernel machine follows kernel-PCA theory"),
    ("width_sweep", "Simon et al. 2023", "Wide ReLU MLPs approach their NTK's prediction as width grows (E7)"),
    ("stepwise_deep", "Simon et al. 2023", "Deep networks trained with Barlow Twins, SimCLR, VICReg learn in steps "
     "(Fig. 1C/D, E2-E5)"),
    ("step_map", "Simon et al. 2023", "With small initialisation and a small learning rate all three losses show "
     "steps; at standard initialisation they blur in the loss but stay in the eigenvalues (E3, E4: a map over "
     "init scale x lr x width)"),
    ("ntk_after_training", "Simon et al. 2023", "Trained embeddings agree with the NTK prediction (E6)"),
    ("speedup", "Simon et al. 2023", "Focusing the gradient on small eigendirections speeds up the last step (sec. 5)"),
    ("noncontrastive_linear", "Tian, Chen & Ganguli 2021", "Linear BYOL/SimSiam: eigenspace alignment, fixed "
     "points, basins (Theorems 1-3, A1-A9)"),
    ("noncontrastive_deep", "Tian, Chen & Ganguli 2021", "BYOL's trained predictor aligns with F and turns "
     "symmetric (Fig. 2, B1-B4)"),
    ("directpred", "Tian, Chen & Ganguli 2021", "DirectPred sets the predictor from F and matches trained "
     "predictors (sec. 6)"),
    ("hltm", "Tian 2020", "Contrastive learning's covariance operator; a tree ReLU net learns the HLTM latents"),
    ("grassmann", "Esser et al. 2023", "SSL with orthogonality constraints: collapse without them, exact Grassmann "
     "flow with them, SSL vs supervised NTK with width"),
    ("verify", "Your architectures", "stepwise verify: a network of yours against its NTK's prediction"),
)


#: Claims of the papers' theory notes (``shared/theory``) that no run here checks, and why: (paper, claim, why).
UNCHECKED: tuple[tuple[str, str, str], ...] = (
    ("Simon et al. 2023", "E2/E3 at the paper's scale: ResNet-18/50 on STL-10 for hundreds of epochs",
     "needs an accelerator: `--scale gpu` runs ResNet-18 at width 1 for minutes (plan printed first), and the CPU "
     "stand-ins (MLP on digits, GroupNorm ResNet-10 on photo patches, `make fig-deep-resnet`) test the same "
     "claim at a size a 2-core CPU trains"),
    ("Tian, Chen & Ganguli 2021", "B1-B8 accuracies at the paper's scale (STL-10 / CIFAR-10 linear probes after "
     "100 epochs of ResNet-18)",
     "needs an accelerator and the data sets; here the same comparisons run on an MLP on embedded data, so the "
     "accuracy gaps the tables report are not expected to transfer in size, only in sign"),
    ("Tian 2020", "Item 9: exact_cov matches NCE in linear-probe accuracy on real data (ResNet-18, STL-10 / CIFAR-10, "
     "500 epochs)",
     "needs an accelerator and the data sets, and the theory note marks it optional; the exact covariance identity "
     "itself (items 2-5) is checked on finite populations"),
)


def _unchecked_table() -> str:
    rows = "".join(f"<tr><td>{html.escape(paper)}</td><td>{html.escape(claim)}</td><td class='reason'>"
                   f"{html.escape(why)}</td></tr>" for paper, claim, why in UNCHECKED)
    return ("<h2>Claims not checked here</h2><table><tr><th>paper</th><th>claim</th><th>why not</th></tr>"
            f"{rows}</table>")


def _claim_index(res: dict) -> int:
    """The position of a run's experiment in :data:`CLAIMS` (unknown experiments go last)."""
    name = str(res.get("experiment", ""))
    for i, (prefix, _, _) in enumerate(CLAIMS):
        if name == prefix or name.startswith(prefix + "/"):
            return i
    return len(CLAIMS)


def _claims_table(runs: list[tuple[Path, dict]]) -> str:
    """Per paper, its claims, the runs that test each, their verdicts and their checks by kind of evidence."""
    rows, last_paper = "", None
    for d, r in runs:
        i = _claim_index(r)
        paper, claim = CLAIMS[i][1:] if i < len(CLAIMS) else ("Other", str(r.get("experiment", d.name)))
        if paper != last_paper:
            rows += f"<tr><th colspan='5'>{html.escape(paper)}</th></tr>"
            last_paper = paper
        rows += (
            f"<tr><td>{_verdict(r['passed'])}</td><td>{html.escape(claim)}</td>"
            f"<td><a href='#{html.escape(d.name)}'>{html.escape(d.name)}</a></td>"
            f"<td>{html.escape(summary_line(r['checks']))}</td>"
            f"<td class='num'>{_seconds(r.get('wall_time_s'))}</td></tr>"
        )
    return ("<table><tr><th>verdict</th><th>claim</th><th>run</th><th>checks by kind of evidence</th>"
            f"<th>wall time</th></tr>{rows}</table>")


def build_report(runs_dir: str | os.PathLike, out: str | os.PathLike) -> Report:
    """Write the report for every ``runs_dir/*/results.json`` to ``out``.

    A results.json that cannot be read (:func:`read_results`) becomes an UNREADABLE row naming the file and the
    problem; the other runs are reported as usual. The command line exits 1 when ``unreadable`` is not 0.

    Returns:
      :class:`Report` ``(path, runs, passed, unreadable)``: ``runs`` and ``passed`` count the readable runs.

    Raises:
      FileNotFoundError: ``runs_dir`` is not a folder or holds no ``*/results.json``.
    """
    runs_dir, out = Path(runs_dir), Path(out)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"no run folder at {runs_dir.resolve()}; run an experiment first (make reproduce)")
    paths = sorted(runs_dir.glob("*/results.json"))
    if not paths:
        raise FileNotFoundError(f"no */results.json under {runs_dir.resolve()}; run an experiment first")
    runs, bad = [], []
    for path in paths:
        res, problem = read_results(path)
        if res is None:
            bad.append((path, problem))
        else:
            runs.append((path.parent, res))
    runs.sort(key=lambda dr: (_claim_index(dr[1]), dr[0].name))
    n_pass = sum(r["passed"] for _, r in runs)
    side = _side_by_side(runs, out.parent)
    unreadable_rows = "".join(
        f"<tr><td><span class='fail'>UNREADABLE</span></td><td><code>{html.escape(str(path))}</code></td>"
        f"<td colspan='3' class='reason'>{html.escape(problem)}</td></tr>"
        for path, problem in bad
    )
    unreadable_table = (f"<table><tr><th>verdict</th><th>results.json</th><th colspan='3'>problem</th></tr>"
                        f"{unreadable_rows}</table>" if bad else "")
    unreadable = f" {len(bad)} results.json could not be read (listed below)." if bad else ""
    body = (
        "<!doctype html><html><head><meta charset='utf-8'><title>stepwise report</title>"
        f"<style>{_CSS}</style></head><body><h1>stepwise: theory vs experiment</h1>"
        f"<p class='sub'>{n_pass} of {len(runs)} experiments passed: every theory, baseline and consistency check of "
        f"the run passed (reported values are shown, not gated).{unreadable}</p>"
        f"<p class='reason'>{html.escape(_KINDS_LEGEND)}</p>"
        f"{_claims_table(runs)}{_unchecked_table()}{unreadable_table}{side}"
        + "".join(_section(d, r) for d, r in runs) + "</body></html>\n"
    )
    with atomic_path(out) as tmp:
        tmp.write_text(body)
    return Report(out, len(runs), n_pass, len(bad))


def build_run_report(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """One-run report (``stepwise verify``'s ``report.html``): the run's verdicts, checks, reasons and figures."""
    run_dir, out = Path(run_dir), Path(out)
    path = run_dir / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results.json in {run_dir.resolve()}; nothing to report")
    res, problem = read_results(path)
    if res is None:
        raise ValueError(f"{path}: {problem}")
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>stepwise: {html.escape(res.get('experiment', ''))}"
        f"</title><style>{_CSS}</style></head><body><h1>stepwise: theory vs experiment</h1>"
        f"<p class='sub'>{html.escape(summary_line(res['checks']))}</p>{_section(run_dir, res)}</body></html>\n"
    )
    with atomic_path(out) as tmp:
        tmp.write_text(body)
    return out
