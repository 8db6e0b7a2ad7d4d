"""Atomic file replacement: write under a temporary name beside the target, then rename.

A reader (or a process killed mid-write) therefore sees the old file or the new one, never
half of one. Every file the library writes in place goes through `atomic_path`. Temporary
names are unique per process and call (`.<name>.<pid>.<random>.tmp`); one left behind by a
killed writer is removed by `sweep_temporaries` once its process is gone.

Write errors (a full disk, a read-only folder) become one `StoreWriteError` naming the file
and the system's reason, whichever writer failed (`write_error`).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import uuid
from pathlib import Path

from ..errors import StoreWriteError

_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
# DuckDB reports an OS error inside its message: ... {"errno":"28"} (not as an OSError).
_ERRNO = re.compile(r'"errno"\s*:\s*"?(\d+)')


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; on success it replaces `path`, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_error(path, exc: BaseException) -> StoreWriteError:
    """`exc` (an OSError, or DuckDB's IOException carrying an errno) as a StoreWriteError."""
    code = getattr(exc, "errno", None)
    if code is None:
        found = _ERRNO.search(str(exc))
        code = int(found.group(1)) if found else None
    reason = os.strerror(code) if code else (getattr(exc, "strerror", None)
                                             or str(exc).splitlines()[0])
    return StoreWriteError(path, reason)


def write_bytes(path: Path, data) -> None:
    """Atomically (re)write `path` with `data`, flushed to the disk before the rename."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise write_error(path, exc) from None


def save_tensor(obj, path: Path, *, digest: bool = True) -> str | None:
    """`torch.save(obj)` atomically to `path`; returns the file's sha256 (None with
    ``digest=False``: a 223 MB artifact's costs 0.1-0.2 s).

    Serialised in memory first: a full disk then raises a real OSError from our write (torch's
    own writer reports it as an errno-less RuntimeError), and the digest costs no re-read.
    """
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getbuffer()
    write_bytes(path, data)
    return hashlib.sha256(data).hexdigest() if digest else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:  # a zombie (killed, not yet reaped) writes nothing any more
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def sweep_temporaries(*folders: Path) -> list[Path]:
    """Remove the temporaries under `folders` whose writing process is gone; returns them.

    A live writer's temporary is never touched (its pid is alive), so this is safe while other
    processes write. Stores shared between hosts are not supported (the pid is a local one).
    """
    removed = []
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for tmp in Path(folder).rglob(".*.tmp"):
            found = _TEMPORARY.match(tmp.name)
            if found and tmp.is_file() and not _alive(int(found.group("pid"))):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                    removed.append(tmp)
    return removed
