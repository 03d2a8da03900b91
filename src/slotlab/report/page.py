"""The report's HTML: one self-contained page (no server, no network).

The static parts (the run's config, the evaluation table, the learning curves as inline SVG) are
written here; the images and their interaction are drawn by `report.js` (shipped beside this
file, inlined into the page with `report.css`) from the data embedded as JSON in
`<script type="application/json" id="report-data">`.

A first, tiny script records every error of the page (`window.onerror`, unhandled promise
rejections, `console.error`) in the `data-errors` attribute of `<html>` (a JSON list) and shows
them at the top of the page, so a headless browser's DOM dump tells whether the page ran cleanly.
"""

from __future__ import annotations

import html
import json
import math
from importlib import resources
from typing import Any

import yaml

CURVE_COLOURS = ("#1f5fa8", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#5c940d")
METRIC_NAMES = {
    "fg_ari": "FG-ARI", "ari": "ARI", "mbo": "mBO", "miou": "mIoU", "mse": "MSE",
    "fg_ari_attn": "FG-ARI of the attention", "ap_inf": "AP@inf", "ap_1": "AP@1",
    "ap_0.5": "AP@0.5", "ap_0.25": "AP@0.25", "ap_0.125": "AP@0.125",
    "acc_all": "all four attributes right", "position_error": "median position error",
}

ERROR_CAPTURE = """
(function () {
  var errors = [];
  function record(message) {
    errors.push(String(message));
    document.documentElement.setAttribute("data-errors", JSON.stringify(errors));
    var box = document.getElementById("report-errors");
    if (box) { box.hidden = false; box.textContent = "Errors in this page: " + errors.join(" | "); }
  }
  document.documentElement.setAttribute("data-errors", "[]");
  window.__reportErrors = errors;
  window.__recordError = record;
  window.addEventListener("error", function (event) {
    var where = event.filename ? " (" + event.filename + ":" + event.lineno + ")" : "";
    record((event.message || ("failed to load " + (event.target && event.target.tagName)))
           + where);
  }, true);
  window.addEventListener("unhandledrejection", function (event) {
    record("unhandled rejection: " + event.reason);
  });
  var consoleError = console.error;
  console.error = function () {
    record(Array.prototype.slice.call(arguments).join(" "));
    return consoleError.apply(console, arguments);
  };
})();
"""


def _asset(name: str) -> str:
    return resources.files("slotlab.report").joinpath(name).read_text(encoding="utf-8")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _json_for_script(value: Any) -> str:
    """JSON that can sit inside a <script> element (no "<" that could close it)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


# ------------------------------------------------------------------------------------------------
# Learning curves: inline SVG
# ------------------------------------------------------------------------------------------------
def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 times 10^n)."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], first
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _tick_label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.0e}"
    return f"{value:g}"


def svg_plot(title: str, series: list[tuple[str, list[tuple[float, float]]]],
             baseline: float | None = None, width: int = 380, height: int = 230) -> str:
    """A line plot of `series` (label, [(step, value)]) over steps as an inline <svg>; a dashed
    line at `baseline` (the untrained model's value). The y axis is logarithmic for positive
    values spanning more than a factor 20 (a loss)."""
    left, right, bottom = 56, 12, 34
    top = 40 if len(series) > 1 else 26  # room for the legend
    pw, ph = width - left - right, height - top - bottom
    points = [p for _, pts in series for p in pts]
    parts = [f'<svg class="curve" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label="{_e(title)}">',
             f'<text x="{left}" y="16" class="curve-title">{_e(title)}</text>']
    if not points:
        parts.append(f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" '
                     'class="curve-empty">no records yet</text></svg>')
        return "".join(parts)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points] + ([baseline] if baseline is not None else [])
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = min(ys), max(ys)
    log = y0 > 0 and y1 / y0 > 20
    if log:
        f = math.log10
        ly0, ly1 = math.floor(f(y0) * 4) / 4, math.ceil(f(y1) * 4) / 4
        ticks = [10.0 ** e * m for e in range(math.floor(ly0), math.ceil(ly1) + 1)
                 for m in (1, 2, 5) if ly0 <= f(10.0 ** e * m) <= ly1]
    else:
        pad = (y1 - y0) * 0.05 or max(abs(y0) * 0.05, 0.05)
        ly0, ly1 = y0 - pad, y1 + pad
        ticks = nice_ticks(ly0, ly1)

        def f(v: float) -> float:
            return v

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + ph - (f(y) - ly0) / ((ly1 - ly0) or 1) * ph

    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="curve-frame"/>')
    for t in ticks:
        y = py(t)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'class="curve-grid"/><text x="{left - 4}" y="{y + 3.5:.1f}" '
                     f'text-anchor="end" class="curve-tick">{_tick_label(t)}</text>')
    for t in nice_ticks(x0, x1, 5):
        x = px(t)
        parts.append(f'<text x="{x:.1f}" y="{top + ph + 14}" text-anchor="middle" '
                     f'class="curve-tick">{_tick_label(t)}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" '
                 'class="curve-axis">step</text>')
    if baseline is not None and math.isfinite(baseline):
        y = py(baseline)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'class="curve-baseline"><title>untrained: {baseline:.4f}</title></line>'
                     f'<text x="{left + pw - 3}" y="{y - 3:.1f}" text-anchor="end" '
                     'class="curve-baseline-label">untrained</text>')
    for i, (label, pts) in enumerate(series):
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
        if not pts:
            continue
        line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" '
                     f'stroke-width="1.6" class="curve-line" data-label="{_e(label)}"/>')
        if len(pts) <= 60:
            for x, y in pts:
                parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.4" '
                             f'fill="{colour}"><title>{_e(label)} at step {x:g}: {y:.4g}'
                             f'</title></circle>')
        if len(series) > 1:
            parts.append(f'<text x="{left + 62 * i}" y="{top - 6}" fill="{colour}" '
                         f'class="curve-legend">{_e(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------
def _facts(report: dict[str, Any]) -> str:
    model = report["model_config"]
    config = report["config"] or {}
    t = model.get("num_iterations")
    if model.get("test_iterations"):
        t = f"{t} (training), {model['test_iterations']} (evaluation)"
    elif report["task"] == "video":
        t = f"{t} per frame"
    rows = [
        ("run", report["path"]),
        ("task", report["task"].replace("_", " ")),
        ("step", report["step"] if report["step"] is not None else "— (a model directory)"),
        ("preset", config.get("preset") or "—"),
        ("data", f"{report['data']} ({report['split']} split)"),
        ("resolution", " x ".join(str(v) for v in model["resolution"])),
        ("slots K", model["num_slots"]),
        ("iterations T", t),
        ("slot noise seed", report["seed"]),
    ]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    full = yaml.safe_dump(report["config"] or {"model": model}, sort_keys=False,
                          default_flow_style=None, width=100)
    return (f'<table class="facts" id="facts">{body}</table>'
            f'<details><summary>full config</summary><pre id="config">{_e(full)}</pre></details>')


def _evaluation(report: dict[str, Any]) -> str:
    trained, untrained = report["trained"], report["untrained"]
    if trained is None and untrained is None:
        return '<p class="note">This run has no evaluation records.</p>'
    heads = []
    if untrained is not None:
        heads.append("untrained")
    if trained is not None:
        step = trained["values"].get("step")
        heads.append(f"trained (step {step})" if step is not None else "trained")
    rows = []
    for key in report["metric_keys"]:
        cells = []
        if untrained is not None:
            cells.append(_number(untrained["values"].get(key)))
        if trained is not None:
            cells.append(_number(trained["values"].get(key)))
        name = METRIC_NAMES.get(key, key)
        rows.append(f'<tr data-key="{_e(key)}"><th title="{_e(key)}">{_e(name)}</th>'
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    notes = []
    if untrained is not None:
        notes.append(f"untrained: {_e(untrained['source'])}")
    if trained is not None:
        notes.append(f"trained: {_e(trained['source'])}")
    table = ('<table class="metrics" id="evaluation-table"><thead><tr><th>metric</th>'
             + "".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>")
    history = ""
    if len(report["evals"]) > 1:
        keys = report["metric_keys"][:8]
        head = "".join(f"<th>{_e(METRIC_NAMES.get(k, k))}</th>" for k in keys)
        body = "".join(
            f"<tr><td>{_number(r['step'])}</td>"
            + "".join(f"<td>{_number(r.get(k))}</td>" for k in keys) + "</tr>"
            for r in report["evals"])
        history = (f'<details><summary>every evaluation ({len(report["evals"])})</summary>'
                   f'<table class="metrics"><thead><tr><th>step</th>{head}</tr></thead>'
                   f"<tbody>{body}</tbody></table></details>")
    return table + "".join(f'<p class="note">{n}</p>' for n in notes) + history


def _curves(report: dict[str, Any]) -> str:
    if not any(points for plot in report["curves"] for _, points in plot["series"]):
        return ('<p class="note" id="curves">No training records (RUN/metrics.jsonl): a model '
                "directory, or a run that has not logged yet.</p>")
    untrained = (report["untrained"] or {}).get("values", {})
    plots = []
    for plot in report["curves"]:
        baseline = untrained.get(plot["key"]) if plot["key"] != "loss" else None
        if not isinstance(baseline, int | float) or isinstance(baseline, bool):
            baseline = None
        plots.append(svg_plot(plot["title"], plot["series"], baseline))
    return f'<div class="curves" id="curves">{"".join(plots)}</div>'


def render_page(report: dict[str, Any]) -> str:
    """The report page of `collect`'s result, as one HTML string."""
    task = report["task"]
    step = f", step {report['step']}" if report["step"] is not None else ""
    title = f"slotlab report: {report['title']}"
    help_text = {
        "object_discovery":
            "Hover a slot to see its pixels in the input and its attention; click a slot to drop "
            "it (or keep it again): the recombined image is recomputed here from the slots' RGB "
            "and mask logits, with a softmax over the kept slots.",
        "set_prediction":
            "Each slot's predicted object beside the ground-truth object the training loss "
            "matches it to (Hungarian matching). Hover a slot to see its attention on the input.",
        "video":
            "Play a clip (or drag the frame slider) to see every frame with its slots. Hover a "
            "slot to see its pixels in the frame and its attention; click a slot to drop it (or "
            "keep it again): the recombined target is recomputed here from the slots' decoded "
            "target and mask logits, with a softmax over the kept slots.",
    }.get(task, "")
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<script>{ERROR_CAPTURE}</script>",
        f"<style>{_asset('report.css')}</style></head>",
        f'<body data-task="{_e(task)}">',
        '<div id="report-errors" class="errors" hidden></div>',
        f"<header><h1>{_e(title)}</h1><p class=\"subtitle\">{_e(task.replace('_', ' '))}"
        f"{_e(step)} &middot; {_e(report['data'])}</p></header>",
        '<section id="run"><h2>Run</h2>', _facts(report), "</section>",
        '<section id="evaluation"><h2>Evaluation</h2>', _evaluation(report), "</section>",
        '<section id="learning-curves"><h2>Learning curves</h2>', _curves(report), "</section>",
        f'<section id="images"><h2>{"Clips" if task == "video" else "Images"}</h2>',
        f'<p class="help">{_e(help_text)}</p>',
        '<div class="controls" id="controls"></div>',
        '<div id="image-list"></div></section>',
        '<pre id="test-results" hidden></pre>',
        f'<script type="application/json" id="report-data">{_json_for_script(report["page"])}'
        "</script>",
        f"<script>{_asset('report.js')}</script>",
        "</body></html>\n",
    ])
