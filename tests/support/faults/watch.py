"""Wait for a file to appear, woken by the kernel (inotify), not by a guessed sleep: process tests act the
moment a job reaches a point (e.g. its first shard marker), whatever the machine's speed."""
from __future__ import annotations

import ctypes
import os
import select
import time
from pathlib import Path
from typing import Callable

IN_CREATE, IN_MOVED_TO, IN_CLOSE_WRITE = 0x100, 0x80, 0x8
_libc = ctypes.CDLL(None, use_errno=True)


def wait_for_file(folder: Path, suffix: str, timeout_s: float, running: Callable[[], bool] = lambda: True) -> list[Path]:
    """Files in `folder` ending with `suffix`, as soon as there is one. `folder`'s parent must exist; the
    folder itself may appear later. Returns [] when `running()` turns false or `timeout_s` passes."""
    fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    mask = IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE
    try:
        _libc.inotify_add_watch(fd, str(folder.parent).encode(), mask)
        watching = False
        deadline = time.monotonic() + timeout_s
        while True:
            if not watching and folder.is_dir():
                watching = _libc.inotify_add_watch(fd, str(folder).encode(), mask) >= 0
            found = sorted(p for p in folder.glob(f"*{suffix}")) if folder.is_dir() else []
            left = deadline - time.monotonic()
            if found or left <= 0 or not running():
                return found
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))   # an event, or a look at running()
            if ready:
                try:
                    os.read(fd, 65536)
                except BlockingIOError:
                    pass
    finally:
        os.close(fd)
