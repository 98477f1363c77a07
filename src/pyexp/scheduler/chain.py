"""Chained rounds (`pyexp-submit --until-done`): a sweep that converges on its own.

A round is one pyexp-submit: settle what ended, resubmit what is missing or failing. With
--until-done the round then (under the experiment's submit lock) either joins a live chain, or
stops the chain saying why, or submits one small follow-up job (1 core, FOLLOWUP_MINUTES, an
`afterany` dependency on every array of the experiment still queued) whose script runs the same
pyexp-submit with the same options, Python and config. The chain stops when every index is done
(then the --then hook is submitted, once), when a round has nothing queued or running after it
(all that remains failed for good, the broken-command guard tripped, no room in the queue), or
after --max-rounds rounds. Its word is chain.json in the experiment's state folder: round k of
N, the follow-up's job id and .err, why it stopped; pyexp-status shows it, pyexp-cancel cancels
the follow-up with the arrays. A follow-up that fails itself (its Python gone) changes nothing:
status sees it gone without a word and names its .err.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from pyexp.environment import slurm_command
from pyexp.errors import PyExpError
from pyexp.scheduler import render, slurm
from pyexp.standing.slurm_states import QueueSnapshot, is_final
from pyexp.state.atomic import write_atomic
from pyexp.state.layout import log_dir, state_dirs
from pyexp.state.ledger import SUBMITTED, UNCONFIRMED, Ledger
from pyexp.state.settings import read_settings
from pyexp.timefmt import amount, hours

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription
    from pyexp.scheduler.cluster import ClusterConfig
    from pyexp.scheduler.submit import Submitted

DEFAULT_MAX_ROUNDS = 10
FOLLOWUP_MINUTES = 10  # a round settles, plans and submits: minutes at most
HOOK_HOURS = 1.0  # the --then hook's time limit


@dataclass
class Chain:
    """chain.json: where an experiment's chain of rounds stands."""

    round: int = 0  # the last round that ran
    max_rounds: int = DEFAULT_MAX_ROUNDS
    followup: str = ""  # job id of the follow-up that runs the next round ('' if none)
    followup_err: str = ""  # its .err
    stopped: str = ""  # why the chain stopped ('' while it runs)
    last: str = ""  # what the last round did
    then: str = ""  # the --then command
    hook: str = ""  # job id of the --then hook, once submitted
    hook_err: str = ""

    @classmethod
    def read(cls, path: str) -> Chain | None:
        """The chain at path, or None when there is none (or it cannot be read)."""
        data = read_settings(path)
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**fields) if data else None
        except TypeError:
            return None

    def write(self, path: str) -> None:
        """Store the chain atomically."""
        write_atomic(path, json.dumps(asdict(self)))


@dataclass(frozen=True)
class ChainRequest:
    """What --until-done asks: the next round's pyexp-submit arguments (experiment first)."""

    argv: list[str]
    max_rounds: int = DEFAULT_MAX_ROUNDS
    then: str | None = None


def refuse_where_jobs_cannot_submit(cluster: ClusterConfig) -> None:
    """--until-done needs jobs that submit jobs; a config that says they may not refuses it."""
    if not cluster.jobs_may_submit_jobs:
        page = cluster.docs.get("jobs_may_submit_jobs", cluster.source)
        raise PyExpError(
            f"--until-done: jobs may not submit jobs on {cluster.name} ({page}), so no follow-up "
            "job can run the next round; run pyexp-submit from a login node instead"
        )


def step(
    exp: ExperimentDescription,
    done: Submitted,
    request: ChainRequest,
    cluster: ClusterConfig,
    this_job: str | None,
) -> str:
    """After a round's submission, under the submit lock: join a live chain, stop the chain
    (every index done: submit the hook once), or chain the next follow-up; the line to print."""
    path = state_dirs(exp).chain
    chain = Chain.read(path)
    own = chain is not None and bool(chain.followup) and chain.followup == this_job
    if chain is not None and not own and _live(chain):
        return (
            f"{done.experiment}: joined its chain (round {chain.round} of {chain.max_rounds}, "
            f"follow-up job {chain.followup})"
        )
    if chain is None or not own:  # a new chain: this call is its first round
        chain = Chain(max_rounds=request.max_rounds, then=request.then or "")
    chain.round += 1
    chain.followup = chain.followup_err = ""
    queued = in_flight(exp, slurm.queue_snapshot()) | set(done.job_ids)
    chain.last = _what_it_did(done, queued)
    if not queued and not done.missing and not done.given_up:
        chain.stopped = f"every index done after round {chain.round}"
        if chain.then and not chain.hook:
            chain.hook, chain.hook_err = _submit_hook(exp, cluster, chain.then)
            chain.stopped += f"; --then hook job {chain.hook}"
    elif not queued:
        chain.stopped = f"round {chain.round} started nothing new: {_why_nothing(done)}"
    elif chain.round >= chain.max_rounds:
        chain.stopped = (
            f"--max-rounds {chain.max_rounds} reached with work still queued; "
            "pyexp-submit --until-done starts a new chain"
        )
    else:
        chain.followup, chain.followup_err = _submit_followup(
            exp, cluster, request, sorted(queued), chain.round + 1, chain.max_rounds
        )
    chain.write(path)
    return f"{done.experiment}: {describe(chain)}"


def stop(exp: ExperimentDescription, why: str) -> None:
    """Record that the chain stopped (pyexp-cancel), if there is one."""
    path = state_dirs(exp).chain
    chain = Chain.read(path)
    if chain is not None and not chain.stopped:
        chain.stopped, chain.followup = why, ""
        chain.write(path)


def round_failed(exp: ExperimentDescription, why: str, this_job: str | None) -> None:
    """A round that failed (one line why) stops the chain, naming the follow-up's log when it
    was the follow-up; a joiner's failure leaves a live chain as it is."""
    chain = Chain.read(state_dirs(exp).chain)
    if chain is None or chain.stopped:
        return
    own = bool(chain.followup) and chain.followup == this_job
    try:
        if not own and _live(chain):
            return
    except PyExpError:  # Slurm does not answer: say what failed all the same
        pass
    log = f" (log: {chain.followup_err})" if own and chain.followup_err else ""
    stop(exp, f"a round failed: {why}{log}")


def pending_followup(exp: ExperimentDescription) -> str | None:
    """The job id of the chain's follow-up, when one is recorded."""
    chain = Chain.read(state_dirs(exp).chain)
    return chain.followup if chain is not None and chain.followup else None


def describe(chain: Chain, gone: bool = False) -> str:
    """One line: round k of N and its follow-up, or why the chain stopped."""
    if chain.stopped:
        return f"chain stopped: {chain.stopped} (last round: {chain.last})"
    if gone:
        return (
            f"chain broken: follow-up job {chain.followup} of round {chain.round + 1} is gone "
            f"without a word (cancelled, or failed: see {chain.followup_err}); pyexp-submit "
            "--until-done restarts it"
        )
    return (
        f"chain: round {chain.round} of {chain.max_rounds} ({chain.last}); follow-up job "
        f"{chain.followup} runs round {chain.round + 1} once they end"
    )


def followup_gone(chain: Chain) -> bool:
    """Whether the chain's follow-up should be there and squeue no longer knows it as pending
    or running (so it will never run the next round)."""
    if chain.stopped or not chain.followup:
        return False
    return not _live(chain)


def in_flight(exp: ExperimentDescription, queue: QueueSnapshot) -> set[str]:
    """Job ids of the experiment's arrays that squeue shows pending or running."""
    entries = Ledger(state_dirs(exp).ledger).entries()
    return {
        e.job_id
        for e in entries
        if e.job_id and e.state in (SUBMITTED, UNCONFIRMED) and queue.entry_active(e.id)
    }


def _live(chain: Chain) -> bool:
    if chain.stopped or not chain.followup:
        return False
    state = slurm.job_state(chain.followup)
    return state is not None and not is_final(state)


def _what_it_did(done: Submitted, queued: set[str]) -> str:
    submitted = amount(done.submitted, "index", "indices")
    still = f", {amount(len(queued), 'array')} queued or running" if queued else ""
    gave_up = f", {done.given_up} failed for good" if done.given_up else ""
    return f"submitted {submitted}{still}{gave_up}"


def _why_nothing(done: Submitted) -> str:
    if done.given_up:
        return (
            f"{amount(done.given_up, 'index', 'indices')} failed for good (see pyexp-status -v); "
            "the --then hook does not run"
        )
    if done.missing:
        return f"{amount(len(done.missing), 'index', 'indices')} wait and none could be queued"
    return "nothing was queued"


def _job_context(exp: ExperimentDescription, cluster: ClusterConfig, name: str) -> dict:
    """What a follow-up or hook script needs besides its own fields: resources, logs, the
    project folder, the Python (absolute) first on a bare PATH, the config."""
    folder = log_dir(exp)
    os.makedirs(folder, exist_ok=True)
    pattern = os.path.join(folder.replace("%", "%%"), name)
    python = cluster.python or sys.executable
    sbatch = shutil.which(slurm_command("sbatch"))
    dirs = [os.path.dirname(python), *([os.path.dirname(sbatch)] if sbatch else [])]
    return {
        "job_name": f"pyexp-{name}-{exp.getExperimentName().replace('/', '_')[:40]}",
        "mem_per_cpu": cluster.mem_per_cpu,
        "account": cluster.account,
        "output": f"{pattern}.out",
        "error": f"{pattern}.err",
        "setup": list(cluster.setup),
        "workdir": exp.config.root,
        "config": exp.config.source,
        "home": os.path.expanduser("~"),
        "path": os.pathsep.join([*dict.fromkeys(dirs), "/usr/bin", "/bin"]),
        "python": python,
        "experiment": exp.path or exp.getExperimentName(),
    }


def _submit_followup(
    exp: ExperimentDescription,
    cluster: ClusterConfig,
    request: ChainRequest,
    after: list[str],
    round_: int,
    max_rounds: int,
) -> tuple[str, str]:
    context = _job_context(exp, cluster, f"chain-round-{round_}")
    context |= {
        "time": hours(FOLLOWUP_MINUTES / 60),
        "dependency": "afterany:" + ":".join(after),
        "argv": request.argv,
        "round": round_,
        "max_rounds": max_rounds,
    }
    return _sbatch(exp, context, "followup.sbatch.j2", f"chain-round-{round_}")


def _submit_hook(
    exp: ExperimentDescription, cluster: ClusterConfig, command: str
) -> tuple[str, str]:
    context = _job_context(exp, cluster, "then")
    context |= {"time": hours(HOOK_HOURS), "command": command}
    return _sbatch(exp, context, "hook.sbatch.j2", "then")


def _sbatch(exp: ExperimentDescription, context: dict, template: str, name: str) -> tuple[str, str]:
    script = os.path.join(state_dirs(exp).scripts, f"{name}.sbatch")
    os.makedirs(os.path.dirname(script), exist_ok=True)
    write_atomic(script, render.render(context, shipped=template))
    err = context["error"].replace("%%", "%")
    return slurm.sbatch(script), err
