"""One table over several studies (the README's Results), read from their study.json files only: per case,
each arm's primary endpoint (mean ± sd over seeds) and its paired difference against the passive control
with the bootstrap 95% CI, Holm p and wins/losses, and the summed wall time of the case's runs.

    python -m boostmis_jax.study.overview docs/results/study_features_cpu10 "Digits=DIR2"
    python -m boostmis_jax.study.overview --arms=boostmis,recommended,random_all DIR ...

Arguments are study workdirs (or their study.json); a case title is its folder name unless given as
TITLE=PATH; --arms=a,b keeps those arms (in the studies' order). The numbers are the ones each study.md
prints; --against=ARM pairs with another arm than random_all, computed here from study.json's per-seed
endpoints with the study's own statistics (no Holm p: that arm was not in the study's table).
--endpoint=KEY reads another endpoint than the study's primary (e.g. final/balanced_accuracy,
official/balanced_accuracy); its Holm p is the study's own for that endpoint's table.
--picks adds each arm's labeled set per class at the end of its curve (the initial labels included, so a
cold-start arm's first picks count too), summed over seeds: e.g. how many rare scans reached the labeled set.
--control=PATH takes that arm's seeds from another study of the same case and budget where a study lacks it
(the cold-start arms pair with the core study's `random_all` without rerunning it); a study whose data or
budget line differs from the control's is refused.
--versus=DIR[,DIR...] pairs each arm with the same arm in the study of the same case and budget among those
(a twin study with one setting changed, e.g. --config.train.labeled_sampling), seed by seed, without Holm.
--pool merges studies of one config and budget on disjoint seeds (a replication beside the original) into one
case, paired per seed afresh and without Holm (a pooled table is secondary to each study's own).

    python -m boostmis_jax.study.overview --control=docs/results/study_pneumonia_cpu10 DIR_COLD
"""
from __future__ import annotations

import json
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from boostmis_jax.errors import UserError
from boostmis_jax.study.methods import METHODS, PASSIVE_METHOD


def load(arg: str) -> tuple[str, dict]:
    """(case title, study.json content) of TITLE=PATH or PATH (a workdir or its study.json)."""
    title, _, path = arg.rpartition("=") if "=" in arg else ("", "", arg)
    p = Path(path)
    p = p / "study.json" if p.is_dir() else p
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"overview: cannot read {p} ({type(e).__name__}); pass a study workdir or its "
                        f"study.json") from None
    if not isinstance(doc, dict) or not {"runs", "endpoints", "aggregate", "comparisons"} <= set(doc):
        raise UserError(f"overview: {p} is not a study.json of this version (an older layout); rerun its study "
                        f"command to rewrite it")
    return title or p.parent.name, with_new_endpoints(doc)


def with_new_endpoints(doc: dict) -> dict:
    """An older study.json with the endpoints added since (computed from its run records), so a new
    endpoint reads the committed studies too; stored values are kept as they are."""
    from boostmis_jax.study import report

    for r in doc.get("runs", []):
        stored = doc["endpoints"].setdefault(f"{r['method']}/seed{r['seed']}", {})
        for key, value in report.endpoints(r).items():
            stored.setdefault(key, value)
    fresh = report.aggregate(doc.get("runs", []))
    for m, per in doc.get("aggregate", {}).items():
        for key, value in fresh.get(m, {}).items():
            per.setdefault(key, value)
    return doc


def _pm(s: dict) -> str:
    return "-" if s.get("mean") is None else f"{s['mean']:.3f} ± {s.get('std') or 0:.3f}"


def _delta(c: dict | None) -> tuple[str, str, str]:
    if not c or c.get("delta") is None:
        return "-", "-", "-"
    lo, hi = c["ci95"] or (None, None)
    ci = "" if lo is None else f" [{lo:+.3f}, {hi:+.3f}]"
    holm = "-" if c.get("holm_p") is None else f"{c['holm_p']:.3f}"
    return f"{c['delta']:+.3f}{ci}", holm, f"{c['wins']}/{c['losses']}/{c['ties']}"


def arm_label(m: str, runs: list[dict]) -> str:
    """`name` and what its runs were configured to pick (read from a run's config, not from today's
    METHODS, so a renamed or redefined arm shows what actually ran)."""
    cfg = next((r.get("config") for r in runs if r["method"] == m and r.get("config")), None)
    if not cfg or not cfg.get("al"):
        return f"{METHODS[m].title} (`{m}`)" if m in METHODS else f"`{m}`"
    from boostmis_jax.acquisition.scoring import is_balanced, parse_selectors

    al, how = cfg["al"], []
    if int(cfg.get("data", {}).get("num_labels", 1)) == 0:
        init = " + SimCLR init" if cfg.get("selfsup", {}).get("init") else ""
        how.append(f"first picks {al.get('initial')}{init}")
    pool = "the pool" if al.get("candidates") == "low_confidence" else "all"
    how.append(f"{al.get('selectors')} in {pool}")
    if al.get("batch", "topk") != "topk":
        how.append(f"{al['batch']} batches")
    try:
        quotas = any(is_balanced(s) for s in parse_selectors(str(al.get("selectors"))))
    except UserError:       # a selector since renamed or removed: label what ran, without its quotas
        quotas = False
    if quotas:
        how.append(f"{al.get('balance', 'predicted')}-class quotas")
    if cfg.get("train", {}).get("labeled_sampling", "uniform") != "uniform":
        how.append("class-balanced labeled batches")
    return f"`{m}`: {', '.join(how)}; threshold {cfg.get('ssl', {}).get('threshold')}"


def _per_seed(doc: dict, endpoint: str) -> dict[str, dict[int, float | None]]:
    """method -> seed -> the run's endpoint."""
    per: dict[str, dict[int, float | None]] = {}
    for r in doc["runs"]:
        per.setdefault(r["method"], {})[r["seed"]] = doc["endpoints"][f"{r['method']}/seed{r['seed']}"][endpoint]
    return per


def picks(runs: list[dict], method: str) -> str:
    """The labeled set per class at the end of the curve, summed over the arm's runs ('-' if not recorded)."""
    per = [(r.get("curve") or [{}])[-1].get("labeled_per_class") for r in runs if r["method"] == method]
    if not per or any(not isinstance(c, list) for c in per):
        return "-"
    return " / ".join(str(sum(c[k] for c in per)) for k in range(len(per[0])))


def control_seeds(doc: dict, control: tuple[str, dict], endpoint: str, against: str) -> dict[int, float | None]:
    """`against`'s per-seed endpoints from the control study, after checking it ran the same case."""
    name, other = control
    for key in ("data", "budget"):
        if doc["study"].get(key) != other["study"].get(key):
            raise UserError(f"overview: --control={name} ran another {key} ({other['study'].get(key)!r} against "
                            f"{doc['study'].get(key)!r}); pass the study of the same case and budget")
    seeds = _per_seed(other, endpoint).get(against)
    if not seeds:
        raise UserError(f"overview: --control={name} has no {against} runs; pass a study that ran {against}")
    return seeds


def twin(doc: dict, others: Sequence[tuple[str, dict]]) -> tuple[str, dict, list[str]]:
    """The one study in `others` that ran the same case and budget as `doc` (the data line, cut seed
    included), and the config keys its runs changed (read from one arm and seed both ran)."""
    key = [doc["study"].get(k) for k in ("data", "budget")]
    found = [(n, o) for n, o in others if [o["study"].get(k) for k in ("data", "budget")] == key]
    if len(found) != 1 or None in key:
        raise UserError(f"overview --versus: {len(found)} studies of the case {key[0]!r} with budget {key[1]!r}; "
                        f"pass exactly one per case, of the same case and budget")
    name, other = found[0]
    from boostmis_jax.bookkeeping import config_changes

    configs = {(r["method"], r["seed"]): r.get("config") for r in other["runs"]}
    pair = next(((r["config"], configs[r["method"], r["seed"]]) for r in doc["runs"]
                 if r.get("config") and configs.get((r["method"], r["seed"]))), None)
    if pair is None:
        return name, other, ["config not recorded"]
    changed = [c.split(":")[0] for c in config_changes(pair[1], pair[0]) if not c.startswith("seed:")]
    if not changed:
        raise UserError(f"overview --versus: {name} ran the same config; pass the study with one setting "
                        f"changed")
    return name, other, changed


def _versus(doc: dict, endpoint: str, other: dict) -> dict:
    """method -> paired comparison of the method with the same arm in `other`, seed by seed."""
    from boostmis_jax.study import stats

    mine, theirs = _per_seed(doc, endpoint), _per_seed(other, endpoint)
    return {m: {**stats.paired_comparison(v, theirs[m]), "holm_p": None}
            for m, v in mine.items() if m in theirs}


def _paired_here(doc: dict, endpoint: str, against: str, control: tuple[str, dict] | None = None) -> dict:
    """method -> stats.paired_comparison(method, against) on the per-seed endpoints, holm_p None."""
    from boostmis_jax.study import stats

    per = _per_seed(doc, endpoint)
    if against not in per and control is not None:
        per[against] = control_seeds(doc, control, endpoint, against)
    if against not in per:
        return {}
    return {m: {**stats.paired_comparison(v, per[against]), "holm_p": None}
            for m, v in per.items() if m != against}


def overview(studies: Sequence[tuple[str, dict]], against: str = PASSIVE_METHOD,
             arms: Sequence[str] = (), control: tuple[str, dict] | None = None,
             with_picks: bool = False, endpoint: str = "", versus: Sequence[tuple[str, dict]] = ()) -> str:
    """The Markdown table: one row per (case, arm), the arms in each study's own order (only `arms` when
    given); `against` from `control` (title, study.json) where a study did not run it; with_picks adds the
    labeled set per class at the end of the curve; `endpoint` replaces each study's primary; `versus` pairs
    each arm with the same arm in the study of the same case there (one setting changed, say)."""
    vs = "the same arm in the --versus study" if versus else f"`{against}`"
    lines = ["| case | arm | n | primary (mean ± sd) | Δ vs " + vs + " [95% CI] | Holm p | W/L/T |"
             + (" labeled per class at the end |" if with_picks else ""), "|---|---|---|---|---|---|---|"
             + ("---|" if with_picks else "")]
    for title, doc in studies:
        primary = endpoint or doc["study"].get("primary", "aubc/balanced_accuracy")
        if any(primary not in agg_m for agg_m in doc["aggregate"].values()):
            keys = sorted(next(iter(doc["aggregate"].values()), {}))
            raise UserError(f"overview: {title} has no endpoint {primary!r}; pass --endpoint= one of {keys}")
        agg, comp = doc["aggregate"], doc["comparisons"].get(primary, {}).get(against)
        if versus:
            twin_name, other, changed = twin(doc, versus)
            comp = _versus(doc, primary, other)
        elif comp is None:
            comp = _paired_here(doc, primary, against, control)
        order = [m for m in doc["study"].get("methods", list(agg)) if m in agg and (not arms or m in arms)]
        wall = sum(r.get("wall_time_s") or 0.0 for r in doc["runs"]) / 60
        twin_of = f", vs {twin_name}: {', '.join(changed)}" if versus else ""
        case = f"{title} (`{primary}`, {len(doc['runs'])} runs, {wall:.0f} min{twin_of})"
        for m in order:
            name = arm_label(m, doc["runs"])
            d, holm, wlt = _delta(comp.get(m))
            s = agg[m][primary]
            extra = f" {picks(doc['runs'], m)} |" if with_picks else ""
            lines.append(f"| {case} | {name} | {s['n']} | {_pm(s)} | {d} | {holm} | {wlt} |{extra}")
            case = ""
        if control is not None and against not in agg and (not arms or against in arms):
            seeds = {r["seed"] for r in doc["runs"]}          # the seeds this study has finished
            values = [v for k, v in control_seeds(doc, control, primary, against).items()
                      if k in seeds and v is not None]
            s = {"mean": statistics.fmean(values) if values else None,
                 "std": statistics.stdev(values) if len(values) > 1 else None}
            name = f"{arm_label(against, control[1]['runs'])}, from {control[0]}"
            mine = [r for r in control[1]["runs"] if r["method"] == against and r["seed"] in seeds]
            extra = f" {picks(mine, against)} |" if with_picks else ""
            lines.append(f"| {case} | {name} | {len(values)} | {_pm(s)} | - | - | - |{extra}")
    return "\n".join(lines) + "\n"


def pooled(studies: Sequence[tuple[str, dict]]) -> tuple[str, dict]:
    """One case from several studies of the same config and budget on disjoint seeds (a replication beside
    the original, say): runs and endpoints merged, aggregates recomputed, pairs formed per seed afresh
    (no Holm: a pooled table is secondary). The data lines may differ only in the seed of their cut."""
    from boostmis_jax.study import report

    def case(meta: dict) -> dict:
        """What must match: the data line with its seed-dependent cut blanked, config, budget, primary."""
        data = re.sub(r"_cut\d+\b", "_cut*", str(meta.get("data", "")))
        return {"config": meta.get("config"), "data": re.sub(r"cut of seed \d+", "cut of seed *", data),
                "budget": meta.get("budget"), "primary": meta.get("primary")}

    first = case(studies[0][1]["study"])
    seen, runs, ends, methods = set(), [], {}, []
    for name, doc in studies:
        for key, value in case(doc["study"]).items():
            if value != first[key]:
                raise UserError(f"overview --pool: {name} ran another {key} ({value!r} against {first[key]!r}); "
                                f"pool only studies of one case and budget")
        for r in doc["runs"]:
            if (r["method"], r["seed"]) in seen:
                raise UserError(f"overview --pool: {r['method']} seed {r['seed']} is in two studies; pool "
                                f"studies on disjoint seeds")
            seen.add((r["method"], r["seed"]))
            runs.append(r)
        ends.update(doc["endpoints"])
        methods += [m for m in doc["study"].get("methods", []) if m not in methods]
    doc = {"study": {**studies[0][1]["study"], "methods": methods}, "runs": runs, "endpoints": ends,
           "aggregate": report.aggregate(runs), "comparisons": {}}
    return " + ".join(t for t, _ in studies) + " (pooled)", doc


def main(argv: Sequence[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m boostmis_jax.study.overview", allow_abbrev=False,
                                description=__doc__.split("\n\n")[0])
    p.add_argument("studies", nargs="+", help="study workdirs or study.json files, each maybe TITLE=PATH")
    p.add_argument("--arms", default="", help="comma-joined arms to keep (default: every arm)")
    p.add_argument("--against", default=PASSIVE_METHOD, help="the arm each row is paired with")
    p.add_argument("--control", default="", help="a study of the same case that ran the --against arm")
    p.add_argument("--endpoint", default="", help="an endpoint key instead of each study's primary")
    p.add_argument("--picks", action="store_true", help="add each arm's labeled set per class at the end of "
                   "the curve, summed over seeds")
    p.add_argument("--versus", default="", help="comma-joined studies: each arm paired with the same arm "
                   "in the one of the same case and budget (a setting changed between them)")
    p.add_argument("--pool", action="store_true", help="pool the studies (same case and budget, disjoint "
                   "seeds) into one case, paired per seed, without Holm")
    a = p.parse_args(argv)
    try:
        control = load(a.control) if a.control else None
        studies = [load(s) for s in a.studies]
        arms = [m for m in a.arms.split(",") if m]
        versus = [load(v) for v in a.versus.split(",") if v]
        if versus and (control or a.against != PASSIVE_METHOD or a.pool):
            raise UserError("overview: --versus pairs each arm with its twin; leave out --against, --control "
                            "and --pool")
        print(overview([pooled(studies)] if a.pool else studies, a.against, arms, control, a.picks, a.endpoint,
                       versus), end="")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
