"""pyexp-status's text: per experiment a bar, counts with percentages, jobs, runtimes, ETA."""

from __future__ import annotations

from pyexp.cli.progress import clock
from pyexp.standing.reconcile import STATUSES
from pyexp.timefmt import amount

BAR = 40
SYMBOLS = {  # drawn in this order, so the bar reads left to right as the legend
    "done": "#",
    "running": ">",
    "held": "h",
    "queued": "~",
    "continuing": "c",
    "failing": "!",
    "failed": "x",
    "missing": ".",
}
LABELS = {
    "continuing": "continuing (checkpointed)",
    "failing": "failing (attempts left)",
    "failed": "failed (gave up)",
}
NO_RUNS = "never submitted and no --runs: counting 1 run (pass --runs N)"


def render(reports: list[dict], verbose: bool) -> str:
    """Every experiment's block, separated by a blank line."""
    return "\n\n".join("\n".join(_block(r, verbose)) for r in reports)


def _block(r: dict, verbose: bool) -> list[str]:
    total = r["total"]
    lines = [f"{r['experiment']}: {r['broken']}"] if r["broken"] else []
    lines += [f"{r['experiment']}: {NO_RUNS}"] if r["runs_unknown"] else []
    lines.append(
        f"{r['experiment']}: {r['done']:,}/{total:,} done ({r['percent']['done']:.1f}%) "
        f"[{bar(r, total)}]"
    )
    lines.append("  " + "  ".join(_count(r, s) for s in STATUSES))
    if not r["queue_known"]:
        lines.append(
            f"  squeue not asked ({r['queue_problem']}): queued means submitted, not yet settled"
            if r["queue_problem"]
            else "  --no-slurm: queued means submitted and not yet settled, squeue not asked"
        )
    if r["jobs"]:
        lines.append(f"  jobs: {', '.join(r['jobs'])}")
    if r.get("chain"):
        lines.append(f"  {r['chain']}")
    if r["runtime"]:
        t = r["runtime"]
        lines.append(
            f"  runtime per index: median {_secs(t['median'])}, p90 {_secs(t['p90'])} "
            f"(from {t['indices']:,} completed)"
        )
    if r["eta"]:
        e = r["eta"]
        lines.append(
            f"  ETA ~{clock(e['seconds'])}: {e['remaining']:,} left x median "
            f"{_secs(e['median'])} / {e['running']:,} running now"
        )
    if r["unplaced"]:
        lines.append(
            f"  note: {r['unplaced']:,} completion records or leases could not be placed at an "
            "index (their parameters are on no record); they count as missing, and runners "
            "skip them"
        )
    lines += [f"  warning: {p}" for p in r["problems"]]
    lines += [_held_line(h) for h in r["held_indices"]]
    lines += [_continuing_line(c) for c in r["continuing_indices"][: None if verbose else 3]]
    if verbose:
        lines += _verbose(r)
    if "by" in r:
        lines += _by(r["by"])
    return lines


def bar(r: dict, total: int) -> str:
    """BAR characters, each status's share drawn with its symbol (cumulative rounding)."""
    out, drawn, seen = [], 0, 0
    for s in STATUSES:
        seen += r[s]
        upto = round(BAR * seen / total) if total else 0
        out.append(SYMBOLS[s] * (upto - drawn))
        drawn = upto
    return "".join(out)


def _count(r: dict, s: str) -> str:
    shown = f"{LABELS.get(s, s)} {r[s]:,}"
    if s == "queued" and not r["queue_known"] and r[s]:
        shown = f"queued? {r[s]:,}"
    return f"{shown} ({r['percent'][s]:.1f}%)" if r[s] else shown


def _secs(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else clock(seconds)


def _held_line(h: dict) -> str:
    who = f"job {h['job']} pid {h['pid']} on {h['host']}" if h["host"] else "nobody"
    return (
        f"  index {h['index']}: held by a stale lease ({who}, last renewed "
        f"{h['age_seconds']} s ago); the next runner takes it over"
    )


def _continuing_line(c: dict) -> str:
    age = c["checkpoint_age_seconds"]
    saved = f"last checkpoint {clock(age)} ago" if age is not None else "no checkpoint left"
    step = c["progress"].get("step")
    at = f" at step {step}" if step is not None else ""
    return (
        f"  index {c['index']}: continuing, {amount(c['restarts'], 'restart')} so far, {saved}{at}"
    )


def _verbose(r: dict) -> list[str]:
    lines = [
        f"  index {h['index']}: running on {h['host']} pid {h['pid']} job {h['job']}"
        for h in r["running_indices"]
    ]
    lines += [
        f"  indices {m['indices']}: retried with more (job {m['job']}): {m['why']}"
        for m in r.get("retried_with_more", [])
    ]
    for kind in ("failing", "failed"):
        rows, total = r[f"{kind}_indices"], r[f"{kind}_indices_total"]
        if total > len(rows):
            lines.append(f"  {kind}: first {len(rows)} of {total:,} indices shown (--json too)")
        for f in rows:
            reason = f"; {f['reason']}" if f["reason"] else ""
            lines.append(
                f"  index {f['index']}: {kind}, {amount(f['attempts'], 'attempt')}, "
                f"last {f['outcome']} "
                f"(exit {f['exit_code']}){reason}; log: {f['log']}"
            )
            lines += [f"      | {line}" for line in f["tail"]]
    return lines


def _by(by: dict) -> list[str]:
    width = max(len(by["param"]), *(len(row["value"]) for row in by["rows"]))
    head = f"  {by['param']:<{width}}  " + "  ".join(f"{s:>8}" for s in STATUSES)
    return [head] + [
        f"  {row['value']:<{width}}  " + "  ".join(f"{row[s]:>8,}" for s in STATUSES)
        for row in by["rows"]
    ]
