"""pyexp-submit's report: a line per experiment, the plan and first script with --dry-run."""

from __future__ import annotations

import os
import shlex

from pyexp.scheduler import planner
from pyexp.scheduler.submit import SubmitOptions, Submitted, too_many
from pyexp.timefmt import amount


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
        ran = n if done.ran is None else done.ran
        of = f" of {n}" if ran != n else ""
        return f"{name}: ran {ran}{of} indices locally in {kind}{failed}{_unclaimed(done, ran)}"
    jobs = ", ".join(done.job_ids)
    more = [p for p in done.plans if p.why]
    retried = sum(p.indices for p in more)
    wait += (
        f"; {amount(retried, 'index', 'indices')} retried with more memory or time "
        "(pyexp-status -v says why)"
        if more
        else ""
    )
    # static without --indices-per-task: the time budget gave each index a task of its own
    farm = farm and len(more) < arrays
    plain = opts.indices_per_task or len(more) == arrays
    how = f", a {_mode(done)}" if farm else "" if plain else f"; {done.plan.why}"
    return (
        f"{name}: submitted {amount(n, 'index', 'indices')} as {amount(arrays, 'array')} "
        f"to {opts.cluster.name} (job {jobs}){how}{wait}"
    )


def _unclaimed(done: Submitted, ran: int) -> str:
    """The line's tail for a farm whose command (no {index}: a pyexp.claim() script) claimed
    nothing."""
    if ran or not done.plan or done.plan.mode != planner.FARM or "{index}" in done.command:
        return ""
    return (
        f"; its workers ran {done.command!r} but it claimed nothing: a command without {{index}} "
        "must call pyexp.claim(); add {index} to run it once per index"
    )


def given_up_line(done: Submitted) -> str:
    """The line saying that indices failed for good, how many, and the command that lists them."""
    n = done.given_up
    return (
        f"{done.experiment}: {amount(n, 'index', 'indices')} failed for good (attempts "
        f"exhausted), not resubmitted; see pyexp-status {shlex.quote(done.experiment)} -v, "
        "then fix and pass --retry-failed"
    )


def _mode(done: Submitted) -> str:
    tasks = sum(p.task_count for p in done.plans if not p.why)  # not the retries with more
    if done.plan and done.plan.mode == planner.FARM:
        return f"farm of {amount(tasks, 'worker')}"
    return amount(tasks, "task")


def _waiting(done: Submitted) -> str:
    """The line's tail for indices left for a later run: the queue has no room for them."""
    waiting = done.plan.waiting if done.plan else 0
    if not waiting:
        return ""
    why = done.limits.source if done.limits else "queue limit"
    verb = "waits" if waiting == 1 else "wait"
    return (
        f"; {amount(waiting, 'index', 'indices')} {verb} for room in the queue ({why}): "
        "the next run submits more"
    )


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
        f"{done.experiment}: dry run, would submit {amount(done.submitted, 'index', 'indices')} as "
        f"{amount(arrays, 'array')} on {opts.cluster.name}:",
        f"  mode: {'' if plan.mode == planner.FARM else 'static, '}{_mode(done)}: {plan.why}",
    ]
    if arrays:
        lines += [planner.describe(done.plans), _expected(plan)]
    if done.files is not None:
        f = done.files
        lines.append(
            f"  files: up to {f.total:,} ({f.own:,} pyexp's while it runs, {f.results:,} results "
            "folders), checked against the file quota when submitting"
        )
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
