"""Write a folder in full or not at all: stage it in a hidden sibling, then rename it into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class StagedFolder:
    """Use as a context manager: fill `self.dir`, then `commit()`. Leaving the block without a commit
    (an error, an interrupt) removes the staging folder, and the destination is untouched."""

    def __init__(self, out: str | Path, overwrite: bool = False):
        self.out = Path(out)
        self.overwrite = overwrite
        self.dir: Path | None = None

    def _exists_error(self) -> Exception:
        return FileExistsError(f"{self.out}: already exists; choose another --out or pass --overwrite")

    def __enter__(self) -> StagedFolder:
        if self.out.exists() and not self.overwrite:
            raise self._exists_error()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.staging-", dir=self.out.parent))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.dir is not None and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    def commit(self) -> Path:
        """Move the staged folder to `out`, replacing an older one only once the new one is whole."""
        assert self.dir is not None, "commit outside the with-block"
        self.dir.chmod(0o755)  # mkdtemp makes it private; these folders are meant to be shared
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self.dir, self.out)
        self.dir = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace one file in a single rename, so readers see the old or the new content, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
