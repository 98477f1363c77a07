"""FileSystemContext: one index's save folder."""

from __future__ import annotations

import os

from pyexp import FileSystemContext


def test_resolve_joins_base_path_and_name(tmp_path):
    ctx = FileSystemContext("results/a", str(tmp_path))
    assert ctx.resolve() == str(tmp_path / "results/a")
    assert ctx.resolve("returns.npy") == str(tmp_path / "results/a/returns.npy")
    assert FileSystemContext("rel/p").resolve("f") == os.path.join("rel/p", "f")


def test_resolve_touches_nothing(tmp_path):
    FileSystemContext("a/b", str(tmp_path)).resolve("c.npy")
    assert list(tmp_path.iterdir()) == []


def test_ensure_exists_makes_the_folder(tmp_path):
    ctx = FileSystemContext("a/b", str(tmp_path))
    assert not ctx.exists()
    assert ctx.ensureExists() == str(tmp_path / "a/b")
    assert (tmp_path / "a/b").is_dir()
    assert ctx.exists()
    ctx.ensureExists()  # idempotent


def test_ensure_exists_with_name_makes_its_parent_only(tmp_path):
    ctx = FileSystemContext("a", str(tmp_path))
    target = ctx.ensureExists("sub/returns.npy")
    assert target == str(tmp_path / "a/sub/returns.npy")
    assert (tmp_path / "a/sub").is_dir()
    assert not os.path.exists(target)
    assert not ctx.exists("sub/returns.npy")
    with open(target, "w") as f:
        f.write("x")
    assert ctx.exists("sub/returns.npy")


def test_remove_a_file_the_folder_or_nothing(tmp_path):
    ctx = FileSystemContext("a", str(tmp_path))
    path = ctx.ensureExists("f.txt")
    with open(path, "w") as f:
        f.write("x")
    ctx.remove("f.txt")
    assert not ctx.exists("f.txt") and ctx.exists()
    ctx.ensureExists("deep/er/g.txt")
    ctx.remove()
    assert not ctx.exists()
    ctx.remove()  # missing is fine
    ctx.remove("nothing-here")


def test_remove_does_not_follow_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    ctx = FileSystemContext("a", str(tmp_path))
    ctx.ensureExists()
    os.symlink(outside, ctx.resolve("link"))
    ctx.remove("link")
    assert not os.path.lexists(ctx.resolve("link"))
    assert (outside / "keep.txt").read_text() == "keep"
    os.symlink(outside, ctx.resolve("link2"))
    ctx.remove()
    assert not ctx.exists()
    assert (outside / "keep.txt").exists()
