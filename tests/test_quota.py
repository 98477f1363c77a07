"""The quota check before submitting: fake `diskusage_report` and `lfs` (they do not exist
here), a real --local submission."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import write_project

from pyexp.scheduler import quota

INDICES = 40


def _fake(folder: Path, name: str, output: str, status: int = 0) -> str:
    path = folder / name
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {status}\n")
    path.chmod(0o755)
    return str(path)


def _submit(root: Path, *flags: str, **env: str) -> subprocess.CompletedProcess:
    path = write_project(
        root, {"metaParameters": {"i": list(range(INDICES))}}, {"command": "true {index}"}
    )
    argv = [sys.executable, "-m", "pyexp.cli.submit", str(path), "--runs", "1", "--local"]
    return subprocess.run(
        [*argv, *flags], env={**os.environ, **env}, cwd=root, capture_output=True, text=True
    )


def _diskusage(root: Path, used: str, limit: str) -> str:
    real = os.path.realpath(root)
    return (
        "                             Description                Space           # of files\n"
        f"   {real} (user me)          280 kB/50 GB              {used}/{limit}\n"
        "   /elsewhere (user me)        1.1 GB/20 TB             1049/1000K"
    )


def test_a_submission_over_the_files_left_is_refused_in_one_line_with_the_figures(tmp_path):
    fake = _fake(tmp_path, "diskusage_report", _diskusage(tmp_path / "p", "499970", "500K"))
    out = _submit(tmp_path / "p", PYEXP_DISKUSAGE_REPORT=fake)
    assert out.returncode != 0 and out.stderr.count("\n") == 1, out.stderr
    assert "would create up to" in out.stderr and "30 left (499,970 of 500,000 used)" in out.stderr
    assert "--yes" in out.stderr and not (tmp_path / "p" / "logs").exists()  # nothing ran
    again = _submit(tmp_path / "p", "--yes", PYEXP_DISKUSAGE_REPORT=fake)
    assert again.returncode == 0, again.stderr


def test_a_submission_that_fits_or_an_unknown_quota_says_nothing(tmp_path):
    fits = _fake(tmp_path, "diskusage_report", _diskusage(tmp_path / "a", "1049", "1000K"))
    out = _submit(tmp_path / "a", PYEXP_DISKUSAGE_REPORT=fits)
    assert out.returncode == 0 and "quota" not in out.stderr + out.stdout, out.stderr
    broken = _fake(tmp_path, "broken", "Socket timed out", status=1)
    out = _submit(tmp_path / "b", PYEXP_DISKUSAGE_REPORT=broken, PYEXP_LFS=broken)
    assert out.returncode == 0 and "quota" not in out.stderr + out.stdout, out.stderr


def test_lustre_quota_is_asked_when_diskusage_report_does_not_answer(tmp_path):
    mount = quota.mount_of(os.path.realpath(tmp_path))
    lfs = (
        "Disk quotas for usr me (uid 1000):\n"
        "     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace\n"
        f"  {mount}  1153824       0 20000000000       -    990  1000  1100       -"
    )
    fake = _fake(tmp_path, "lfs", lfs)
    out = _submit(tmp_path / "p", PYEXP_LFS=fake)  # diskusage_report: the tests' nowhere path
    assert out.returncode != 0 and f"file quota of {mount} has 10 left" in out.stderr


def test_linux_tools_answer_last_and_are_read_even_from_their_over_quota_exit(tmp_path):
    mount = quota.mount_of(os.path.realpath(tmp_path))
    source = quota.mount_source(mount)
    over = (  # as `quota -w` prints it over the space quota (a grace column), exiting 1
        "Disk quotas for user me (uid 1000): \n"
        "     Filesystem  blocks   quota   limit   grace   files   quota   limit   grace\n"
        f"{source} 1153824* 1000000 2000000  6days     990    1000    1100        "
    )
    fake = _fake(tmp_path, "quota", over, status=1)
    out = _submit(tmp_path / "p", PYEXP_QUOTA=fake)  # diskusage_report, lfs: nowhere
    assert out.returncode != 0 and out.stderr.count("\n") == 1, out.stderr
    assert f"file quota of {mount} has 10 left (990 of 1,000 used)" in out.stderr
    none = _fake(tmp_path, "none", "Disk quotas for user me (uid 1000): none")
    out = _submit(tmp_path / "q", PYEXP_QUOTA=none)
    assert out.returncode == 0 and "quota" not in out.stderr + out.stdout, out.stderr


def test_the_dry_run_shows_the_estimate(tmp_path):
    out = _submit(tmp_path / "p", "--dry-run", "--indices-per-task", "4")
    assert out.returncode == 0, out.stderr
    # 10 tasks x 5 + 40 indices x 2 of pyexp's own; 40 results folders ({params}/{run})
    assert "files: up to 170 (130 pyexp's while it runs, 40 results folders)" in out.stdout


def test_quota_reports_parse_as_the_tools_print_them():
    report = quota.parse_diskusage(
        "   /home (user me)    280 kB/50 GB    29/500K\n"
        "   /project (group def-prof)    1.1 GB/1000 GB    1039/500K\n"
    )
    assert report == [
        quota.Left("/home", 29, 500_000),
        quota.Left("/project/def-prof", 1039, 500_000),
    ]
    lfs = (
        "Filesystem kbytes quota limit grace files quota limit grace\n/scratch\n 1 0 0 - 12* 0 20 -"
    )
    assert quota.parse_lfs(lfs, "/scratch") == [quota.Left("/scratch", 12, 20)]
    assert quota.parse_lfs("/scratch 1 0 0 - 12 0 0 -", "/scratch") == []  # no file limit
    human = "Filesystem space quota limit grace files quota limit grace\n/dev/sdb1 24K 9766M"
    human += " 19532M 1200* 1000 2000 7days"  # quota -s, over the files' soft quota
    assert quota.parse_quota(human.split(), "/home", "/dev/sdb1") == [
        quota.Left("/home", 1200, 1000)
    ]
    wrapped = "Filesystem blocks quota limit grace files quota limit grace\nsrv:/export/home\n"
    wrapped += "   24  0  0  7  0  5k"  # quota without -w wraps a long name; a hard limit only
    assert quota.parse_quota(wrapped.split(), "/home", "srv:/export/home") == [
        quota.Left("/home", 7, 5000)
    ]
