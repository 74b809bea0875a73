"""serve.uploads: the server's own upload folder, and sweeping what is left in it."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

from serve.uploads import delete_older, own_temp_folder, private_upload_folder


def test_old_files_and_long_empty_folders_anywhere_below_are_deleted_and_new_ones_kept(tmp_path):
    old, new, emptied = tmp_path / "abc" / "cut_off_upload", tmp_path / "def" / "photo.jpg", tmp_path / "ghi"
    for path in (old, new):
        path.parent.mkdir()
        path.write_bytes(b"x")
    emptied.mkdir()  # Gradio's folder of an upload answered (and deleted) long ago
    os.utime(old, (0, 0))
    os.utime(emptied, (0, 0))
    delete_older(tmp_path, 60)
    assert not old.exists() and new.exists() and not emptied.exists() and tmp_path.exists()
    assert old.parent.exists()  # emptied just now: it goes with a later sweep


def test_a_sweep_passes_over_what_it_cannot_delete(tmp_path):
    kept = tmp_path / "old_folder" / "new_photo.jpg"
    kept.parent.mkdir()
    kept.write_bytes(b"x")
    os.utime(kept.parent, (0, 0))  # old enough to go, but not empty: rmdir refuses, and the sweep goes on
    delete_older(tmp_path, 60)
    assert kept.exists()


def test_the_server_makes_its_own_upload_folder_unless_one_is_set(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "operators"))
    assert private_upload_folder() is None and os.environ["GRADIO_TEMP_DIR"] == str(tmp_path / "operators")
    monkeypatch.delenv("GRADIO_TEMP_DIR")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = private_upload_folder()
    assert folder.parent == tmp_path and os.environ["GRADIO_TEMP_DIR"] == str(folder)
    assert folder.stat().st_mode & 0o077 == 0  # the server's user's alone


@pytest.mark.skipif(os.name != "posix", reason="process ids are checked on Linux and macOS only")
def test_a_start_removes_the_folders_a_killed_server_left_and_no_running_ones(tmp_path, monkeypatch):
    """A `kill -9` leaves the upload folder, every photo in it: the next start removes it, and leaves the folders of
    servers still running."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / f"spotcheck-uploads-{int(ended.stdout)}-abc123"
    running = tmp_path / f"spotcheck-uploads-{os.getppid()}-def456"
    previous_self = tmp_path / f"spotcheck-uploads-{os.getpid()}-ghi789"  # in a container: process 1 every time
    older = tmp_path / "spotcheck-uploads-jkl012"  # named before process ids: left for the operator
    for folder in (killed, running, previous_self, older):
        (folder / "upload").mkdir(parents=True)
        (folder / "upload" / "photo.jpg").write_bytes(b"a photo")
    mine = own_temp_folder("spotcheck-uploads-")
    assert not killed.exists() and not previous_self.exists() and running.exists() and older.exists()
    assert mine.exists() and mine.name.startswith(f"spotcheck-uploads-{os.getpid()}-")
    assert own_temp_folder("spotcheck-uploads-") != mine and mine.exists()  # a second one leaves this process's first
