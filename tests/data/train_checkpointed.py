"""A training loop that checkpoints, as the README shows: the checkpoint tests' command.

Usage: train_checkpointed.py TOTAL_STEPS STEP_SECONDS SAVE_EVERY HISTORY [--stall]

Each step sleeps STEP_SECONDS; every SAVE_EVERY steps (and on SIGTERM) it saves its step with
pyexp.save_checkpoint. HISTORY gets `start N` and `save N` lines; an attempt that did not resume
from the last saved step exits 3 (its work went backwards). --stall saves step 0 every time.
"""

import os
import signal
import sys
import time

import pyexp

total, seconds, every, history = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
stall = "--stall" in sys.argv


def note(line: str) -> None:
    with open(history, "a") as f:
        f.write(f"{os.environ['PYEXP_INDEX']} {line}\n")


def last_saved() -> int:
    if not os.path.exists(history):
        return 0
    with open(history) as f:
        lines = f.read().splitlines()
    mine = [x.split() for x in lines if x.startswith(os.environ["PYEXP_INDEX"] + " save ")]
    return int(mine[-1][2]) if mine else 0


state = pyexp.load_checkpoint(default={"step": 0})
note(f"start {state['step']}")
if state["step"] != last_saved():
    sys.exit(3)


def save() -> None:
    step = 0 if stall else state["step"]
    pyexp.save_checkpoint({"step": step}, step=step, fraction=step / total)
    note(f"save {step}")


signal.signal(signal.SIGTERM, lambda *_: (save(), sys.exit(0)))
while state["step"] < total:
    time.sleep(seconds)
    state["step"] += 1
    if state["step"] % every == 0:
        save()
note("done")
