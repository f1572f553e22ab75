"""study.json and study.md from the run records: endpoints per run, mean +- sd per arm, and the paired
comparisons of every arm against the reference arm (`boostmis`) and the passive control (`random_all`).

Endpoints: `final/<metric>` (the last cycle's test value), `aubc/<metric>` (the area under the run's budget
curve, `stats.aubc`) and, with data.test_from_train, `official/<metric>` (the last cycle on the source's own
test split, reported beside the in-distribution test) with `official_aubc/balanced_accuracy` (the budget curve's
area on that split). Lower is better for `ece`; higher for the rest.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from boostmis_jax.errors import UserError
from boostmis_jax.study import stats
from boostmis_jax.study.methods import METHODS, PASSIVE_METHOD, REFERENCE_METHOD, REFERENCES

METRICS = ("balanced_accuracy", "macro_f1", "macro_f1_val_threshold", "auc", "minority_recall",
           "minority_auprc", "ece", "accuracy")
METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced acc.", "macro_f1": "macro-F1",
                "macro_f1_val_threshold": "macro-F1 @val thr.", "auc": "AUC",
                "minority_recall": "minority recall", "minority_auprc": "minority AUPRC", "ece": "ECE"}
LOWER_IS_BETTER = ("ece",)
KINDS = ("aubc", "final")
OFFICIAL = ("balanced_accuracy", "macro_f1", "auc", "minority_recall")   # data.test_from_train: source's test
ENDPOINTS = (tuple(f"{k}/{m}" for k in KINDS for m in METRICS) + tuple(f"official/{m}" for m in OFFICIAL)
             + ("official_aubc/balanced_accuracy",))   # the budget curve's area on the source's test split
TABLE_ENDPOINTS = ("aubc/balanced_accuracy", "final/balanced_accuracy", "aubc/macro_f1", "final/macro_f1",
                   "final/macro_f1_val_threshold", "final/auc", "final/minority_recall",
                   "final/minority_auprc",
                   "final/ece", "official/balanced_accuracy", "official/auc", "official_aubc/balanced_accuracy")


def check_primary(primary: str) -> str:
    if primary not in ENDPOINTS:
        raise UserError(f"study.primary={primary!r}: choose aubc/<metric> or final/<metric> (metric from "
                        f"{list(METRICS)}) or official/<metric> or official_aubc/balanced_accuracy, e.g. "
                        f"--config.study.primary=aubc/balanced_accuracy")
    return primary


def endpoints(record: dict) -> dict[str, float | None]:
    """endpoint -> value of one run record (None where the metric is missing or not finite)."""
    curve = record.get("curve") or []
    out: dict[str, float | None] = {}
    for m in METRICS:
        v = record.get("test", {}).get(m)
        out[f"final/{m}"] = float(v) if v is not None and math.isfinite(float(v)) else None
        ys = [p.get("test", {}).get(m) for p in curve]
        out[f"aubc/{m}"] = stats.aubc([p["labeled"] for p in curve], ys) if curve else None
    official = record.get("test", {}).get("official") or {}
    for m in OFFICIAL:
        v = official.get(m)
        out[f"official/{m}"] = float(v) if v is not None and math.isfinite(float(v)) else None
    ys = [p.get("official_balanced_accuracy") for p in curve]
    out["official_aubc/balanced_accuracy"] = (stats.aubc([p["labeled"] for p in curve], ys)
                                              if curve and official else None)
    return out


def mean_std(values: Sequence[float | None]) -> dict:
    """Mean and sample standard deviation (ddof=1; None below two values) of the values that exist."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else None, "n": len(v)}


def by_method(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(r["method"], []).append(r)
    return out


def aggregate(runs: list[dict]) -> dict:
    """method -> endpoint -> mean/std/n over seeds."""
    return {m: {e: mean_std([endpoints(r)[e] for r in rs]) for e in ENDPOINTS}
            for m, rs in by_method(runs).items()}


def comparisons(runs: list[dict], order: Sequence[str] | None = None,
                against: Sequence[str] = (REFERENCE_METHOD, PASSIVE_METHOD)) -> dict:
    """endpoint -> against -> method -> stats.paired_comparison (method - against, same seeds) with
    `holm_p`: Holm across the endpoint's table, each unordered pair of arms counted once."""
    groups = by_method(runs)
    order = [m for m in (order or list(groups)) if m in groups]
    values = {m: {r["seed"]: endpoints(r) for r in groups[m]} for m in order}
    out: dict = {}
    for e in ENDPOINTS:
        table: dict = {}
        family: dict[frozenset, dict] = {}
        for ref in [a for a in against if a in values]:
            ref_vals = {s: v[e] for s, v in values[ref].items()}
            for m in order:
                if m == ref:
                    continue
                c = stats.paired_comparison({s: v[e] for s, v in values[m].items()}, ref_vals)
                table.setdefault(ref, {})[m] = c
                family.setdefault(frozenset((m, ref)), c)
        keys = list(family)
        adjusted = stats.holm([family[k]["wilcoxon_p"] for k in keys])
        holm_of = dict(zip(keys, adjusted, strict=True))
        for ref, rows in table.items():
            for m, c in rows.items():
                c["holm_p"] = holm_of[frozenset((m, ref))]
        out[e] = table
    return out


def median_run(rs: list[dict], key: str = "balanced_accuracy") -> dict:
    """The run at the (lower) median test value of `key`."""
    ordered = sorted(rs, key=lambda r: (r["test"].get(key) or 0.0, r["seed"]))
    return ordered[(len(ordered) - 1) // 2]


def _num(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def _ms(s: dict) -> str:
    if s["mean"] is None:
        return "-"
    return f"{s['mean']:.4f}" + (f" ± {s['std']:.4f}" if s["std"] is not None else "")


def _p(p: float | None) -> str:
    return "-" if p is None else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def _ci(ci: list[float] | None) -> str:
    return "-" if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _span(values: list[int]) -> str:
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _title(m: str) -> str:
    return f"{METHODS[m].title} (`{m}`)" if m in METHODS else f"`{m}`"


def comparison_lines(comp: dict, endpoint: str, order: list[str]) -> list[str]:
    better = "lower" if endpoint.split("/")[-1] in LOWER_IS_BETTER else "higher"
    lines = [f"Paired by seed, Δ = method - the arm it is paired with ({better} is better); 95% CI: "
             f"percentile bootstrap of the mean Δ ({stats.BOOTSTRAP_RESAMPLES} resamples, seed "
             f"{stats.BOOTSTRAP_SEED}); t CI: paired t; Wilcoxon signed-rank and sign test two-sided; Holm "
             f"across this table. A difference is claimed only where the 95% CI excludes 0.", "",
             "| method | vs | n | Δ | 95% CI (bootstrap) | 95% CI (t) | Wilcoxon p | Holm p | sign p "
             "| W/L/T |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for ref, rows in comp.get(endpoint, {}).items():
        for m in order:
            c = rows.get(m)
            if c is None:
                continue
            lines.append(f"| `{m}` | `{ref}` | {c['n']} | {_num(c['delta'], True)} | {_ci(c['ci95'])} | "
                         f"{_ci(c['t_ci95'])} | {_p(c['wilcoxon_p'])} | {_p(c['holm_p'])} | "
                         f"{_p(c['sign_p'])} | "
                         f"{c['wins']}/{c['losses']}/{c['ties']} |")
    return lines


def render_markdown(meta: dict, runs: list[dict], reference: str = "") -> str:
    """study.md: provenance, the primary endpoint and its paired comparisons, the secondary endpoints,
    the budget curves with the labeled-set class counts, and every run."""
    groups = by_method(runs)
    order = [m for m in meta.get("methods", list(groups)) if m in groups]
    agg, comp = aggregate(runs), comparisons(runs, order)
    primary = meta.get("primary", "aubc/balanced_accuracy")
    lines = [f"# Study `{meta.get('config', '')}`, preset `{meta.get('preset', '')}`", ""]
    if meta.get("command"):
        lines += [f"Command: `{meta['command']}`", ""]
    for key, label in (("machine", "Machine"), ("code", "Code"), ("date", "Date"), ("data", "Data"),
                       ("budget", "Budget"), ("workers", "Workers")):
        if meta.get(key):
            lines.append(f"- {label}: {meta[key]}")
    planned = meta.get("planned_runs")
    lines += [f"- Runs finished: {len(runs)}" + (f" of {planned}" if planned else ""),
              f"- Primary endpoint (fixed before the study ran): `{primary}`", "",
              f"## Primary endpoint `{primary}`", "",
              "Mean ± sample std over seeds (n = seeds); test split; each cycle's best-by-validation EMA "
              "weights.",
              "", "| method | n | labels | steps | " + primary + " |", "|---|---|---|---|---|"]
    ref_rows = REFERENCES.get(reference, {}).get("rows", []) if reference else []
    for m in order:
        rs = groups[m]
        lines.append(f"| {_title(m)} | {len(rs)} | {_span([r['labeled'] for r in rs])} | "
                     f"{_span([r['steps'] for r in rs])} | {_ms(agg[m][primary])} |")
    lines += [""] + comparison_lines(comp, primary, order)
    lines += ["", "## Secondary endpoints (mean ± std over seeds; no multiplicity claims)", "",
              "| method | n | " + " | ".join(f"{k} {METRIC_NAMES[m]}" for k, m in
                                           (e.split("/") for e in TABLE_ENDPOINTS)) + " |",
              "|---|---|" + "---|" * len(TABLE_ENDPOINTS)]
    for m in order:
        lines.append(f"| `{m}` | {len(groups[m])} | " + " | ".join(_ms(agg[m][e]) for e in TABLE_ENDPOINTS)
                     + " |")
    if ref_rows:
        lines += ["", f"Published, not run here ({REFERENCES[reference]['source']}): "
                  + "; ".join(f"{row['title']}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()
                                                              if k != "title") for row in ref_rows)]
    secondary = [e for e in ("final/balanced_accuracy", "aubc/macro_f1") if e != primary]
    for e in secondary:
        lines += ["", f"### Paired comparisons on `{e}`", ""] + comparison_lines(comp, e, order)
    lines += curve_lines(groups, order, primary.split("/")[-1])
    lines += ["", "## Every run", "",
              "| method | seed | labels | steps | " + " | ".join(METRIC_NAMES[k] for k in METRICS)
              + f" | {primary} | labeled per class (end) | wall s |",
              "|---|---|---|---|" + "---|" * len(METRICS) + "---|---|---|"]
    for m in order:
        for r in sorted(groups[m], key=lambda r: r["seed"]):
            t = r["test"]
            counts = (r.get("curve") or [{}])[-1].get("labeled_per_class")
            lines.append(f"| `{m}` | {r['seed']} | {r['labeled']} | {r['steps']} | "
                         + " | ".join(_num(t.get(k)) for k in METRICS)
                         + f" | {_num(endpoints(r)[primary])} | {'/'.join(map(str, counts or [])) or '-'} | "
                         + ("-" if r.get("wall_time_s") is None else f"{r['wall_time_s']:.0f}") + " |")
    plots = meta.get("plots", [])
    if plots:
        lines += [""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def curve_lines(groups: dict[str, list[dict]], order: list[str], metric: str) -> list[str]:
    """Per cycle: labels, mean test `metric` over seeds, and the labeled set's class counts summed over
    seeds (where the picks went)."""
    width = max((len(r.get("curve") or []) for m in order for r in groups[m]), default=0)
    if width < 2:
        return []
    lines = ["", f"## Budget curves (mean test {METRIC_NAMES[metric]} over seeds after each cycle; labeled "
                 f"per class summed over seeds)", "",
             "| method | " + " | ".join(f"cycle {i}" for i in range(width)) + " |", "|---|" + "---|" * width]
    for m in order:
        cells = []
        for i in range(width):
            pts = [r["curve"][i] for r in groups[m] if len(r.get("curve") or []) > i]
            if not pts:
                cells.append("")
                continue
            s = mean_std([p.get("test", {}).get(metric) for p in pts])
            counts = [p.get("labeled_per_class") for p in pts if p.get("labeled_per_class")]
            per = "/".join(str(sum(c[k] for c in counts)) for k in range(len(counts[0]))) if counts else ""
            cells.append(f"{_span([p['labeled'] for p in pts])}: {_ms(s)}" + (f" ({per})" if per else ""))
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    return lines


def study_document(meta: dict, runs: list[dict]) -> dict:
    """study.json's content."""
    order = [m for m in meta.get("methods", []) if m in by_method(runs)] or None
    return {"study": meta, "runs": runs,
            "endpoints": {f"{r['method']}/seed{r['seed']}": endpoints(r) for r in runs},
            "aggregate": aggregate(runs), "comparisons": comparisons(runs, order),
            "reference": REFERENCES.get(meta.get("reference", ""), {})}
