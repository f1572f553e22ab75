"""The GPU suite's short table, from its bench.jsonl (one JSON line per measurement, tagged by stage).

    python benchmarks/suite_report.py OUT/bench.jsonl        # prints the table (the suite writes summary.txt)
    python benchmarks/suite_report.py A.jsonl B.jsonl        # several files, in order

Only what the lines hold is printed; a stage that was cut or failed shows its rc and seconds.
"""
from __future__ import annotations

import json


def _f(v, nd: int = 1) -> str:
    return "-" if v is None else (f"{v:,.{nd}f}" if isinstance(v, (int, float)) else str(v))


def report(lines: list[dict]) -> str:
    out: list[str] = []
    add = out.append
    for r in lines:
        st = r.get("stage")
        if st == "env":
            add(f"env: {r.get('gpu') or '-'} | jax {r.get('jax')} {r.get('backend')} | git {r.get('git')}")
        elif "ssl_img_per_s" in r:
            add(f"step {r['model']} {r['dtype']}: ssl {_f(r['ssl_img_per_s'])} img/s (pipelined "
                f"{_f(r.get('ssl_img_per_s_pipelined'))}), bare {_f(r.get('bare_img_per_s'))}, ratio "
                f"{_f(r.get('ratio'), 3)}, compile ssl {_f(r['compile_s'].get('ssl'), 2)} s, "
                f"{_f(r['cost']['ssl'].get('gflops'), 1)} GFLOP/step"
                + (f", views {r['views_ms']} ms ({r['views_share']:.1%})" if "views_ms" in r else ""))
        elif "kernel_profile" in r:
            kp = r["kernel_profile"]
            for ln in kp.get("lines", [])[:2]:
                top = "; ".join(f"{n[:48]} {ms:.3f}ms" for n, ms, _ in ln["top"][:5])
                add(f"  kernels {r['dtype']} [{ln['line'][:30]}] {ln['total_ms']:.3f} ms/step: {top}")
            if "error" in kp:
                add(f"  kernels: {kp['error'][:200]}")
        elif r.get("peer"):
            add(f"peer {r['peer']} {r['model']} {r['dtype']} on {r['device']}: {_f(r.get('img_per_s'))} img/s "
                f"end to end (compute only {_f(r.get('compute_img_per_s'))}), CPU s/step "
                f"{(r.get('cpu_s_per_step') or {}).get('e2e', '-')}, torch {r.get('torch')}"
                + (f", e2e error {r['e2e_error'][:120]}" if r.get("e2e_error") else ""))
        elif "variant" in r:
            if "error" in r:
                add(f"variant {r['variant']}: error {r['error'][:160]}")
            else:
                add(f"variant {r['variant']} ({r['dtype']}): {_f(r.get('img_per_s'))} img/s vs base "
                    f"{_f(r.get('base_img_per_s'))} (x{_f(r.get('paired'), 3)} paired), compile "
                    f"{_f(r.get('compile_s'), 2)} s")
        elif r.get("case") == "loop":
            t = r.get("timing") or {}
            add(f"loop {r.get('label')}: wall {_f(r.get('wall_s_outside'))} s outside, steps "
                f"{r.get('last_step')}, {_f(r.get('steps_per_s_median'), 1)} steps/s, img/s by cycle "
                f"{r.get('img_per_s_median_by_cycle')}, timing "
                + (", ".join(f"{k} {v:.1f}" for k, v in t.items()) if t else "-")
                + f", test F1 {_f(r.get('test_macro_f1'), 4)}")
        elif r.get("case") == "knn":
            if "error" in r:
                add(f"knn {r.get('variant')}: error {r['error'][:160]}")
            else:
                add(f"knn {r['pool']:,} x {r['dim']} {r['precision']} block {r['block']} group {r['group']} "
                    f"shortlist {r['shortlist']}: {r['seconds']:.3f} s, {r['achieved_tflops']:.1f} TFLOP/s "
                    f"(dot {r['dot_tflops']:.1f}, floor {r['floor_s']:.3f} s)"
                    + (f", top-k = fp32 on {r['topk_equal_to_float32']:.4%}" if "topk_equal_to_float32" in r
                       else ""))
        elif r.get("case") in ("features", "image"):
            add(f"pool {r['case']} {r['pool']:,}: {r['seconds']:.3f} s ({r['samples_per_s']:,.0f}/s), "
                f"{r.get('achieved_tflops')} TFLOP/s, floor {r.get('floor_s')} s, knn block {r['knn_block']} "
                f"{r.get('knn_precision')}" + (f", knn alone {r['knn_s']} s" if "knn_s" in r else ""))
        elif str(r.get("case", "")).endswith("_first_call"):
            add(f"pool {r['case']} {r['pool']:,}: first call (compile included) "
                f"{r['seconds_with_compile']} s")
        elif "rc" in r and "seconds" in r:
            add(f"  [{st}] rc {r['rc']} in {r['seconds']} s (limit {r.get('limit')})")
    return "\n".join(out)


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="JSONL files (bench.jsonl, or kept lines under docs/results/bench)")
    rows = []
    for path in p.parse_args().files:
        for line in open(path, encoding="utf-8"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    print(report(rows))


if __name__ == "__main__":
    main()
