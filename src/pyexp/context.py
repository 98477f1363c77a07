"""FileSystemContext: one index's save folder."""

from __future__ import annotations

import os
import shutil


class FileSystemContext:
    """A folder on disk that names resolve inside."""

    def __init__(self, path: str, base: str = "") -> None:
        self.path = os.path.join(base, path)

    def resolve(self, name: str = "") -> str:
        """The path of name inside this folder."""
        return os.path.join(self.path, name) if name else self.path

    def ensureExists(self, name: str = "") -> str:
        """Create the folder (or name's parent folder) and return the resolved path."""
        target = self.resolve(name)
        os.makedirs(os.path.dirname(target) if name else target, exist_ok=True)
        return target

    def exists(self, name: str = "") -> bool:
        """Whether name (or the folder) exists."""
        return os.path.exists(self.resolve(name))

    def remove(self, name: str = "") -> None:
        """Delete name, or the whole folder; missing is fine."""
        target = self.resolve(name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.remove(target)

    def __repr__(self) -> str:
        return f"FileSystemContext({self.path!r})"
