"""Rendering: every user-controlled value reaches the script quoted, and hostile ones are inert."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyexp.scheduler.cluster import load_cluster
from pyexp.scheduler.planner import plan_arrays
from pyexp.scheduler.render import RenderError, array_context, environment, q, render

# Everything q accepts: no control characters, no backslash.
safe_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\\"), max_size=40
)
HOSTILE = 'it\'s "a" $(touch {m}) `touch {m}` ;touch {m}; & | > < * ? ~ # %'
MARKER = "pwned"  # a relative name, so it can sit in a folder name too


@given(safe_text)
def test_q_is_one_shell_word_of_the_same_text(text):
    assert shlex.split(q(text)) == [text]


@settings(max_examples=20, deadline=None)
@given(st.lists(safe_text, min_size=1, max_size=20))
def test_bash_reads_quoted_values_back_unchanged(values):
    script = "printf '%s\\0' " + " ".join(q(v) for v in values)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split("\0")[:-1] == values


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b", "a\\b", "tab\there", None])
def test_q_refuses_what_sbatch_or_a_directive_line_would_misread(bad):
    with pytest.raises(RenderError):
        q(bad)


def test_every_expression_is_quoted_even_without_the_filter():
    env = environment()
    assert env.from_string("echo {{ x }}").render(x="$(id)") == "echo '$(id)'"
    assert env.from_string("echo {{ x|q }}").render(x="$(id)") == "echo '$(id)'"  # not twice
    assert env.from_string("{{ x|raw }}").render(x="module load $X") == "module load $X"
    with pytest.raises(RenderError):
        env.from_string("echo {{ x }}").render(x="a\nrm -rf ~")


@pytest.fixture
def hostile(tmp_path):
    """A tree whose every path is hostile, and a fake python that records how it was called."""
    root = tmp_path / HOSTILE.format(m=MARKER)
    root.mkdir()
    fake_bin = root / f"bin $(touch {MARKER})"
    fake_bin.mkdir()
    calls = tmp_path / "calls.json"
    fake_python = fake_bin / "python"
    fake_python.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd(),"
        f" 'config': os.environ.get('PYEXP_CONFIG')}}, open({str(calls)!r}, 'w'))\n"
    )
    fake_python.chmod(0o755)
    return {"root": root, "tmp": tmp_path, "calls": calls, "python": str(fake_python)}


def _pwned(tmp) -> list:
    """Every file a hostile value would have created: in the tree, or where bash ran."""
    return list(tmp.rglob(MARKER)) + [p for p in (tmp / "cwd").glob(MARKER)]


def _context(hostile, cluster):
    root = hostile["root"]
    plan = plan_arrays(range(10), 2, 1001, throttle=2, time_hours=cluster.time_hours)[0]
    return array_context(
        plan,
        cluster,
        job_name="pyexp-abc123",
        ledger=str(root / "ledger dir" / "abc123.json"),
        log_dir=str(root / "logs 100%"),
        experiment=str(root / f"$(touch {MARKER}).json"),
        workdir=str(root),
        config=str(root / "config.json"),
    )


def _hostile_cluster(hostile):
    cluster = load_cluster("local")
    evil = HOSTILE.format(m=hostile["tmp"] / MARKER)
    return replace(
        cluster,
        account=evil,
        python=hostile["python"],
        sbatch={"comment": evil, "exclusive": None},
    )


def test_rendered_script_is_valid_bash_and_runs_nothing_hostile(hostile):
    cluster = _hostile_cluster(hostile)
    context = _context(hostile, cluster)
    script = render(context)
    path = hostile["root"] / "job.sbatch"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    # Run it as the batch shell would; the fake python records its arguments.
    env = {k: v for k, v in os.environ.items() if k != "PYEXP_CONFIG"}
    (hostile["tmp"] / "cwd").mkdir()
    subprocess.run(["bash", str(path)], check=True, cwd=hostile["tmp"] / "cwd", env=env)
    assert _pwned(hostile["tmp"]) == []
    call = json.loads(hostile["calls"].read_text())
    assert call["argv"] == ["-m", "pyexp.cli.run", "--ledger", context["ledger"]]
    assert call["cwd"] == context["workdir"]
    assert call["config"] == context["config"]


def test_sbatch_directives_read_back_as_the_values_given(hostile):
    cluster = _hostile_cluster(hostile)
    context = _context(hostile, cluster)
    directives = {}
    for line in render(context).splitlines():
        if line.startswith("#SBATCH "):
            # Without backslashes, sbatch splits a directive line like a POSIX shell.
            (word,) = shlex.split(line[len("#SBATCH ") :])
            name, _, value = word.partition("=")
            directives[name] = value
    evil = HOSTILE.format(m=hostile["tmp"] / MARKER)
    log_dir = str(hostile["root"] / "logs 100%").replace("%", "%%")  # Slurm: %% is a literal %
    assert directives == {
        "--job-name": "pyexp-abc123",
        "--array": "0-4%2",
        "--time": "0:14:59",
        "--cpus-per-task": "1",
        "--mem-per-cpu": "256M",
        "--account": evil,
        "--output": f"{log_dir}/pyexp-abc123_%a.out",
        "--error": f"{log_dir}/pyexp-abc123_%a.err",
        "--signal": "B:USR1@60",
        "--comment": evil,
        "--exclusive": "",
    }


def test_whole_node_cluster_asks_for_a_node_and_no_memory(hostile):
    cluster = replace(load_cluster("trillium").with_account("def-me"), python=hostile["python"])
    script = render(_context(hostile, cluster))
    assert "#SBATCH --nodes=1\n" in script and "#SBATCH --cpus-per-task=192\n" in script
    assert "mem" not in script and "#SBATCH --account=def-me\n" in script
    assert "module load python/3.11\n" in script  # setup lines are shell, written as is


def test_gpu_config_asks_for_its_model_qualified_gpus(hostile):
    cluster = replace(load_cluster("fir-gpu").with_account("def-me"), python=hostile["python"])
    script = render(_context(hostile, cluster))
    assert "#SBATCH --gpus=h100:1\n" in script and "#SBATCH --mem-per-cpu=24000M\n" in script
    assert "partition" not in script
    assert "--gpus" not in render(_context(hostile, load_cluster("fir")))


def test_user_template_is_quoted_too(hostile, tmp_path):
    template = tmp_path / "mine.sbatch.j2"
    template.write_text("#!/bin/bash\necho {{ experiment }}\nexec {{ python }} {{ ledger }}\n")
    cluster = _hostile_cluster(hostile)
    context = _context(hostile, cluster)
    script = render(context, str(template))
    assert script.splitlines()[1] == "echo " + shlex.quote(context["experiment"])
    line = script.splitlines()[1]
    out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=hostile["tmp"])
    assert out.stdout == context["experiment"] + "\n"
    assert _pwned(hostile["tmp"]) == []


def test_template_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.j2"
    bad.write_text("{% if %}")
    with pytest.raises(RenderError, match="bad.j2:1"):
        render({}, str(bad))
    unknown = tmp_path / "unknown.j2"
    unknown.write_text("{{ nope }}")
    with pytest.raises(RenderError, match="'nope' is undefined"):
        render({}, str(unknown))
    with pytest.raises(RenderError, match="cannot read template"):
        render({}, str(tmp_path / "missing.j2"))


def _run_script(tmp_path, setup: list[str], **fields) -> tuple[subprocess.CompletedProcess, dict]:
    """Render the array script with these setup lines and a fake python, run it as the batch
    shell; bash's result and what the fake python saw (empty if it never ran)."""
    seen = tmp_path / "seen.json"
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"env = {{k: v for k, v in os.environ.items() if k.startswith('PYEXP_')}}\n"
        f"json.dump({{'argv': sys.argv[1:], 'env': env}}, open({str(seen)!r}, 'w'))\n"
    )
    python.chmod(0o755)
    cluster = replace(load_cluster("local"), python=str(python), setup=tuple(setup), **fields)
    plan = plan_arrays(range(2), 1, 1001)[0]
    context = array_context(
        plan,
        cluster,
        job_name="j",
        ledger="l.json",
        log_dir="logs",
        experiment="e.json",
        workdir=str(tmp_path),
    )
    script = tmp_path / "job.sbatch"
    script.write_text(render(context))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    return done, json.loads(seen.read_text()) if seen.exists() else {}


def test_a_failing_setup_line_stops_the_task_naming_the_line(tmp_path):
    setup = ["export A=1", 'test "$A" = 1', "false  # 'module load' \\ fails", "echo never"]
    done, seen = _run_script(tmp_path, setup)
    assert done.returncode == 97 and seen == {} and "never" not in done.stdout
    said = [line for line in done.stderr.splitlines() if "setup line failed" in line]
    assert said == ["pyexp: setup line failed (exit 1): false  # 'module load' ? fails"]


def test_setup_lines_that_succeed_keep_their_effects_and_the_runner_starts(tmp_path):
    done, seen = _run_script(tmp_path, ["export PYEXP_FROM_SETUP=yes", "true # fine"])
    assert done.returncode == 0, done.stderr
    assert seen["argv"] == ["-m", "pyexp.cli.run", "--ledger", "l.json"]
    assert seen["env"]["PYEXP_FROM_SETUP"] == "yes"
    assert seen["env"]["PYEXP_PYTHON_ON_PATH"] == "1"
    assert "PYEXP_EARLY_SIGNAL" not in seen["env"]
    assert f"pyexp: python {tmp_path}/bin/python" in done.stdout  # which Python runs, in .out


def test_python_on_path_false_is_passed_to_the_runner(tmp_path):
    done, seen = _run_script(tmp_path, [], python_on_path=False)
    assert done.returncode == 0 and seen["env"]["PYEXP_PYTHON_ON_PATH"] == "0"


def test_slurms_warning_signal_before_the_runner_is_passed_on_not_fatal(tmp_path):
    # Slurm's --signal=B:USR1 can come while setup lines run: bash must not die of it.
    done, seen = _run_script(tmp_path, ["kill -USR1 $$", "sleep 0.1"])
    assert done.returncode == 0, done.stderr
    assert seen["env"]["PYEXP_EARLY_SIGNAL"] == "USR1"


def test_a_stop_signal_before_the_runner_ends_the_task_saying_so(tmp_path):
    done, seen = _run_script(tmp_path, ["kill -TERM $$", "sleep 0.1"])
    assert done.returncode == 143 and seen == {}
    assert "pyexp: stopped by SIGTERM before pyexp-run started" in done.stderr
