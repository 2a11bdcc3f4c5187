"""The demo's report: satisfaction per round, per cycle and per version with 95% intervals,
every decision with its statistics, golden pass rates, time per stage, and a PNG plot."""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tuneloop.store import Database, schema


def _rate(k: int, n: int) -> dict[str, Any]:
    from tuneloop.experiments.stats import wilson_interval

    lo, hi = wilson_interval(k, n) if n else (0.0, 1.0)
    return {"satisfied": k, "n": n, "rate": k / n if n else None, "ci95": [lo, hi]}


def _per_cycle(rounds) -> list[dict[str, Any]]:
    """Rounds grouped by the champion that served them (a new champion starts a new cycle)."""
    cycles: list[dict[str, Any]] = []
    for r in rounds:
        if not cycles or cycles[-1]["champion"] != r.champion:
            cycles.append({"champion": r.champion, "rounds": [], "k": 0, "n": 0})
        c = cycles[-1]
        c["rounds"].append(r.round)
        # the champion's own answers: the users that were not in the challenger's arm
        k, n = r.per_version.get(r.champion, [0, 0])
        c["k"] += k
        c["n"] += n
    return [{"cycle": i, "champion": c["champion"], "rounds": c["rounds"], **_rate(c["k"], c["n"])} for i, c in enumerate(cycles)]


def _lift_test(per_version: dict[str, list[int]], first: str | None, final: str | None) -> dict[str, Any] | None:
    """The first champion against the final one, on every answer each of them gave (as champion
    or in the challenger's arm): a two-proportion z-test of the users' satisfaction."""
    from tuneloop.experiments.stats import two_proportion_ztest

    if not first or not final or first == final or not per_version.get(first, [0, 0])[1] \
            or not per_version.get(final, [0, 0])[1]:
        return None
    (ka, na), (kb, nb) = per_version[first], per_version[final]
    t = two_proportion_ztest(ka, na, kb, nb)
    return {"from": first, "to": final, "rate_from": t.mean_a, "rate_to": t.mean_b, "n_from": na, "n_to": nb,
            "difference": t.estimate, "ci95": list(t.ci), "z": t.statistic, "p_value": t.p_value,
            "significant": t.p_value < 0.05 and t.estimate > 0}


def build_report(db: Database, rounds, cfg, seconds: float) -> dict[str, Any]:
    from tuneloop.loop.levers import cycle_gain, lever_history, summarize_levers

    per_version: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rounds:
        for v, (k, n) in r.per_version.items():
            per_version[v][0] += k
            per_version[v][1] += n
    cycles = _per_cycle(rounds)
    lr, er, ex = schema.loop_runs, schema.eval_runs, schema.experiments
    runs = db.fetch_all(sa.select(lr).order_by(lr.c.started_at))
    stage_time: dict[str, float] = defaultdict(float)
    for run in runs:
        for stage, s in ((run["details"] or {}).get("timings") or {}).items():
            stage_time[stage] += s
    golden = {}
    for row in db.fetch_all(sa.select(er.c.version_id, er.c.pass_rate, er.c.n, er.c.created_at).order_by(er.c.created_at)):
        golden[row["version_id"]] = {"pass_rate": row["pass_rate"], "n": row["n"]}
    decisions = []
    for run in runs:
        exp = db.fetch_one(sa.select(ex).where(ex.c.id == run["experiment_id"])) if run["experiment_id"] else None
        d = (exp or {}).get("decision") or {}
        details = run["details"] or {}
        decisions.append({"run_id": run["id"], "version": run["version_id"], "state": run["state"], "decision": run["decision"],
                          "lever": details.get("lever", "adapter"), "lever_reason": details.get("lever_reason"),
                          "prompt": ((details.get("train") or {}).get("prompt") if details.get("lever") == "prompt" else None),
                          "gain": cycle_gain(details) if run["state"] == "promoted" else None,
                          "trigger": details.get("reason"), "gate": details.get("gate"),
                          "experiment": {k: d.get(k) for k in ("decision", "reason", "improvement", "p_value", "ci", "samples") if k in d},
                          "error": run["error"]})
    return {
        "world": "addition (tiny model)" if cfg.fast else "capitals (SmolLM2-135M-Instruct)",
        "seconds": round(seconds, 1),
        "config": {k: str(v) for k, v in asdict(cfg).items()},
        "rounds": [{"round": r.round, "t": round(r.t, 1), **_rate(r.satisfied, r.n), "champion": r.champion,
                    "challenger": r.challenger, "per_version": r.per_version} for r in rounds],
        "per_version": {v: _rate(k, n) for v, (k, n) in sorted(per_version.items())},
        "per_cycle": cycles,
        "lift": _lift_test(per_version, cycles[0]["champion"] if cycles else None,
                           db.scalar(sa.select(schema.aliases.c.version_id).where(schema.aliases.c.name == "champion"))),
        "decisions": decisions,
        "levers": summarize_levers(lever_history(db)),  # which lever won, how much
        "golden_pass_rates": golden,
        "stage_seconds": {k: round(v, 2) for k, v in stage_time.items()},
    }


def write_outputs(report: dict[str, Any], rounds, out_dir: Path) -> None:
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    plot_satisfaction(report, out_dir / "satisfaction.png")


def plot_satisfaction(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report["rounds"]
    x = [r["round"] for r in rounds]
    y = [r["rate"] or 0 for r in rounds]
    lo = [r["ci95"][0] for r in rounds]
    hi = [r["ci95"][1] for r in rounds]
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    ax.fill_between(x, lo, hi, alpha=0.2, label="95% interval")
    ax.plot(x, y, marker="o", label="share of satisfied answers (all traffic)")
    lever_of = {d["version"]: d.get("lever") for d in report.get("decisions") or []}
    for prev, cur in zip(rounds, rounds[1:]):
        if cur["champion"] != prev["champion"]:
            lever = f" ({lever_of[cur['champion']]})" if lever_of.get(cur["champion"]) else ""
            ax.axvline(cur["round"] - 0.5, color="green", linestyle="--")
            ax.text(cur["round"] - 0.45, 0.95, f"{cur['champion']} promoted{lever}", color="green", fontsize=8, va="top")
    ax.set_ylim(0, 1)
    ax.set_xlabel("round of traffic")
    ax.set_ylabel("satisfaction")
    ax.set_title(f"tuneloop demo: {report['world']}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_report(console, report: dict[str, Any], out_dir: Path) -> None:
    from rich.table import Table

    t = Table(title="satisfaction per version (simulated users' hidden preference)")
    for col in ("version", "satisfied", "n", "rate", "95% CI", "golden pass rate"):
        t.add_column(col)
    for v, s in report["per_version"].items():
        g = report["golden_pass_rates"].get(v, {}).get("pass_rate")
        t.add_row(v, str(s["satisfied"]), str(s["n"]), f"{s['rate']:.1%}" if s["rate"] is not None else "-",
                  f"[{s['ci95'][0]:.1%}, {s['ci95'][1]:.1%}]", f"{g:.1%}" if g is not None else "-")
    console.print(t)
    d = Table(title="cycles")
    for col in ("version", "lever", "end state", "gate", "online decision", "lift", "p-value"):
        d.add_column(col)
    for dec in report["decisions"]:
        e, g = dec["experiment"], dec["gate"] or {}
        gate = f"{g.get('pass_rate', 0):.0%} vs {g.get('champion_pass_rate') or 0:.0%}" if g.get("pass_rate") is not None else "-"
        imp, p = e.get("improvement"), e.get("p_value")
        d.add_row(str(dec["version"]), dec.get("lever") or "adapter", dec["state"], gate, str(e.get("reason") or dec["decision"] or dec["error"] or "-")[:70],
                  f"{imp:+.1%}" if isinstance(imp, (int, float)) else "-", f"{p:.3g}" if isinstance(p, (int, float)) else "-")
    console.print(d)
    for dec in report["decisions"]:
        if dec["state"] == "promoted":  # which lever won, by how much
            what = f" (prompt {json.dumps((dec.get('prompt') or {}).get('system'))})" if dec.get("lever") == "prompt" else ""
            gain = f"{dec['gain']:+.1%} on the online metric" if isinstance(dec.get("gain"), (int, float)) else "gain unknown"
            console.print(f"{dec['version']} won with the {dec.get('lever') or 'adapter'} lever{what}: {gain}", highlight=False)
    lift = report["lift"]
    if lift:
        verdict = "significant" if lift["significant"] else "not significant"
        console.print(f"satisfaction {lift['from']} {lift['rate_from']:.1%} -> {lift['to']} {lift['rate_to']:.1%} "
                      f"(difference {lift['difference']:+.1%}, 95% CI [{lift['ci95'][0]:+.1%}, {lift['ci95'][1]:+.1%}], "
                      f"p={lift['p_value']:.2g}: {verdict})")
    else:
        console.print("no promotion happened in this run")
    console.print("time per stage: " + ", ".join(f"{k} {v:.1f}s" for k, v in report["stage_seconds"].items()))
    console.print(f"total {report['seconds']}s; report {out_dir / 'report.json'}, plot {out_dir / 'satisfaction.png'}")
