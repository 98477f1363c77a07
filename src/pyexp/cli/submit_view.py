"""pyexp-submit's report: a line per experiment, the plan and first script with --dry-run."""

from __future__ import annotations

import os

from pyexp.scheduler import planner
from pyexp.scheduler.submit import SubmitOptions, Submitted, too_many


def report(done: Submitted, opts: SubmitOptions) -> str:
    """What happened, for the terminal: a line per experiment, the plan with --dry-run."""
    name = done.experiment
    if not done.missing:
        return f"{name}: nothing to submit"
    if opts.dry_run:
        return _dry_run_report(done, opts)
    n, arrays, wait = done.submitted, len(done.plans), _waiting(done)
    if not arrays:
        return f"{name}: nothing submitted{wait}"
    farm = done.plan is not None and done.plan.mode == planner.FARM
    if opts.local:
        kind = f"a {_mode(done)}" if farm else _mode(done)
        failed = (
            f", {done.failed_tasks} of them with failures (logs: {done.logs})"
            if done.failed_tasks
            else ""
        )
        return f"{name}: ran {n} indices locally in {kind}{failed}"
    jobs = ", ".join(done.job_ids)
    return (
        f"{name}: submitted {n} indices as {_count(arrays, 'array')} "
        f"to {opts.cluster.name} (job {jobs}){f', a {_mode(done)}' if farm else ''}{wait}"
    )


def _mode(done: Submitted) -> str:
    tasks = sum(p.task_count for p in done.plans)
    if done.plan and done.plan.mode == planner.FARM:
        return f"farm of {_count(tasks, 'worker')}"
    return _count(tasks, "task")


def _waiting(done: Submitted) -> str:
    """The line's tail for indices left for a later run: the queue has no room for them."""
    waiting = done.plan.waiting if done.plan else 0
    if not waiting:
        return ""
    why = done.limits.source if done.limits else "queue limit"
    return f"; {waiting} indices wait for room in the queue ({why}): the next run submits more"


def _dry_run_report(done: Submitted, opts: SubmitOptions) -> str:
    plan, arrays = done.plan, len(done.plans)
    assert plan is not None and done.limits is not None
    notes = [] if done.queue_seen else ["squeue not reachable: queued work not subtracted"]
    if opts.cluster.account_required and not opts.cluster.account:
        notes.append("no account yet: submitting needs --account, or SBATCH_ACCOUNT")
    if len(done.missing) > planner.SANE_MISSING and not opts.yes:
        notes.append(too_many(done))
    if plan.waiting:
        notes.append(_waiting(done).removeprefix("; "))
    lines = [
        f"{done.experiment}: dry run, would submit {done.submitted} indices as "
        f"{_count(arrays, 'array')} on {opts.cluster.name}:",
        f"  mode: {'' if plan.mode == planner.FARM else 'static, '}{_mode(done)}: {plan.why}",
    ]
    if arrays:
        lines += [planner.describe(done.plans), _expected(plan)]
    lines += [_limits(done.limits), *(f"  note: {note}" for note in notes)]
    if done.scripts:
        first = done.scripts[0]
        with open(first, encoding="utf-8") as f:
            script = f.read()
        others = " (the others differ in --array, job name and ledger)" if arrays > 1 else ""
        lines += [
            f"  scripts: {os.path.dirname(first)} ({arrays} written); {first}{others}:",
            script.rstrip("\n"),
        ]
    return "\n".join(lines)


def _expected(plan: planner.Plan) -> str:
    e, est = planner.expected(plan), plan.estimate
    clock = planner.clock
    return (
        f"  expected: makespan ~{clock(e.makespan)}, ~{e.core_hours:.3g} core-hours "
        f"(~{clock(est.mean)} per index: {est.source}); "
        f"at most {clock(e.bound_makespan)}, {e.bound_core_hours:g} core-hours"
    )


def _limits(limits: planner.Limits) -> str:
    room = "no queue limit known" if limits.room is None else f"room for {limits.room} more jobs"
    running = f", {limits.running} running at once" if limits.running is not None else ""
    return f"  limits: {room} ({limits.source}){running}, MaxArraySize {limits.max_array_size}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
