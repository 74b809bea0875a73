"""The server's own upload folder, and deleting what is left in it.

Gradio keeps uploads in /tmp/gradio unless GRADIO_TEMP_DIR says otherwise: one folder shared by every Gradio app on
the machine, in which an upload cut off midway (a phone leaving Wi-Fi) stays for good, since Gradio deletes only the
uploads it finished receiving.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path


def private_upload_folder() -> Path | None:
    """Make this server an upload folder of its own (readable by its user only, removed when the server stops) and
    point GRADIO_TEMP_DIR at it; None, and the operator's folder left as it is, when GRADIO_TEMP_DIR is set. Call it
    before building the page: Gradio reads the variable then."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        return None
    folder = own_temp_folder("spotcheck-uploads-")
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


def own_temp_folder(prefix: str) -> Path:
    """A new temporary folder, readable by this user only, removed with everything in it when the program ends.
    Its name holds this process's id, so that a later start removes it if the program was killed (`kill -9`, a
    power cut) and left it, photos and all (`remove_left_behind`)."""
    remove_left_behind(prefix)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))
    _MADE.add(folder)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


_MADE: set[Path] = set()  # the folders this process made: its own id in another's name means an earlier process


def remove_left_behind(prefix: str) -> None:
    """Remove this user's temporary folders named `prefix` + a process id whose process has ended, or this process's
    id on a folder it did not make (in a container the server is process 1 every time). POSIX only: elsewhere they
    stay."""
    if os.name != "posix":
        return
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = folder.name[len(prefix):].split("-")[0]
        if not pid.isdigit() or folder in _MADE or folder.is_symlink():
            continue
        try:
            if folder.stat().st_uid != os.getuid() or (int(pid) != os.getpid() and _running(int(pid))):
                continue
        except OSError:  # gone meanwhile
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    """Whether a process `pid` exists (another user's counts: it cannot be signalled, but it runs)."""
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only checked
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_every(folder: Path, seconds: float) -> None:
    """Delete what has lain in `folder` for `seconds`, every `seconds`, in a background thread."""
    def sweep_forever() -> None:
        while True:
            time.sleep(seconds)
            delete_older(folder, seconds)

    threading.Thread(target=sweep_forever, daemon=True, name=f"spotcheck-sweeper-{folder.name}").start()


def delete_older(folder: Path, seconds: float) -> None:
    """Delete the files below `folder` last changed more than `seconds` ago, and the folders below it that are then
    empty and as old. Anything that vanishes or cannot be deleted meanwhile is passed over: a sweep must not stop.
    (An upload stalled for longer loses its part, and one that Gradio is moving into an old empty folder at that very
    instant fails: both then ask for the photo again.)"""
    cutoff = time.time() - seconds
    for parent, folders, files in os.walk(folder, topdown=False):
        for name in files:
            _delete_if_older(os.path.join(parent, name), cutoff, os.unlink)
        for name in folders:
            _delete_if_older(os.path.join(parent, name), cutoff, os.rmdir)  # only an empty one goes


def _delete_if_older(path: str, cutoff: float, delete) -> None:
    try:
        if os.lstat(path).st_mtime < cutoff:
            delete(path)
    except OSError:  # gone already, not empty, or not ours to delete
        pass
