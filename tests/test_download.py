"""data.download against a fake Dataverse on 127.0.0.1 (never the real host)."""
from __future__ import annotations

import errno
import hashlib
import http.client
import shutil
import io
import json
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np
import pytest

from data.datasets import load_ham10000
from data.download import DOI, DownloadError, main, write_metadata

# image_id -> (lesion_id, dx); part 1 holds the first three, part 2 the rest
IMAGES = {
    "ISIC_0000001": ("HAM_0000001", "nv"),
    "ISIC_0000002": ("HAM_0000001", "nv"),
    "ISIC_0000003": ("HAM_0000002", "vasc"),
    "ISIC_0000004": ("HAM_0000003", "mel"),
    "ISIC_0000005": ("HAM_0000004", "bkl"),
}
PART_1, PART_2 = list(IMAGES)[:3], list(IMAGES)[3:]


def jpg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", pixels)
    assert ok
    return buf.tobytes()


def make_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def metadata_csv() -> bytes:
    lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    lines += [f"{lesion},{image},{dx},histo,50.0,male,back" for image, (lesion, dx) in IMAGES.items()]
    return ("\n".join(lines) + "\n").encode()


def dataset_files() -> dict[int, dict]:
    """id -> what the fake server knows: the file's listing entry and its bytes."""
    part_1 = make_zip({f"{i}.jpg": jpg(n) for n, i in enumerate(PART_1)})
    # part 2 nests its images in a folder and carries macOS litter, as real zips can
    part_2 = make_zip({"HAM10000_images_part_2/": b"", "__MACOSX/._x.jpg": b"junk",
                       **{f"HAM10000_images_part_2/{i}.jpg": jpg(10 + n) for n, i in enumerate(PART_2)}})
    csv_bytes = metadata_csv()
    tab_bytes = csv_bytes.replace(b",", b"\t")
    return {
        # the metadata as Dataverse keeps it: ingested to .tab, the original CSV on request
        11: {"filename": "HAM10000_metadata.tab", "originalFileName": "HAM10000_metadata.csv",
             "originalFileFormat": "text/csv", "data": tab_bytes, "original": csv_bytes},
        12: {"filename": "HAM10000_images_part_1.zip", "data": part_1},
        13: {"filename": "HAM10000_images_part_2.zip", "data": part_2},
        14: {"filename": "ISIC2018_Task3_Test_Images.zip", "data": b"not needed"},
    }


class FakeDataverse:
    """A ThreadingHTTPServer on 127.0.0.1 serving the dataset listing and datafile endpoints."""

    def __init__(self) -> None:
        self.files = dataset_files()
        self.checksums: dict[int, str] = {}  # overrides of the listed md5
        self.cut: dict[int, int] = {}  # serve only the first N bytes of a file (its listing keeps the full size)
        self.ranges = True  # honour "Range: bytes=N-" with 206 Partial Content, as Dataverse does
        self.listed_sizes = True  # the listing gives each file's size
        self.requests: list[str] = []
        self.range_headers: list[tuple[int, str | None]] = []  # (file id, Range header) of each datafile request
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                fake.requests.append(self.path)
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if url.path == "/api/datasets/:persistentId/" and query.get("persistentId") == [DOI]:
                    self.reply(json.dumps(fake.listing()).encode(), "application/json")
                elif url.path.startswith("/api/access/datafile/") and url.path.rsplit("/", 1)[1].isdigit():
                    file_id = int(url.path.rsplit("/", 1)[1])
                    entry = fake.files.get(file_id)
                    if entry is None:
                        self.send_error(404)
                        return
                    original = query.get("format") == ["original"] and "original" in entry
                    body = entry["original"] if original else entry["data"]
                    served = body[: fake.cut.get(file_id, len(body))]
                    wanted = self.headers.get("Range")
                    fake.range_headers.append((file_id, wanted))
                    if wanted and fake.ranges:
                        start = int(wanted.removeprefix("bytes=").rstrip("-"))
                        if start >= len(body):
                            self.send_error(416)
                            return
                        self.reply(served[start:], "application/octet-stream", status=206,
                                   content_range=f"bytes {start}-{len(body) - 1}/{len(body)}")
                    else:
                        self.reply(served, "application/octet-stream")
                else:
                    self.send_error(404)

            def reply(self, body: bytes, content_type: str, status: int = 200, content_range: str = "") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if content_range:
                    self.send_header("Content-Range", content_range)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def listing(self) -> dict:
        files = []
        for file_id, entry in self.files.items():
            stored = entry.get("original", entry["data"])  # Dataverse lists the original's checksum
            md5 = self.checksums.get(file_id, hashlib.md5(stored).hexdigest())
            data_file = {"id": file_id, "filename": entry["filename"], "md5": md5,
                         "checksum": {"type": "MD5", "value": md5}}
            if self.listed_sizes:
                data_file["filesize"] = len(entry["data"])
            if "original" in entry:
                data_file.update(originalFileName=entry["originalFileName"],
                                 originalFileFormat=entry["originalFileFormat"])
                if self.listed_sizes:
                    data_file["originalFileSize"] = len(stored)
            files.append({"label": entry["filename"], "dataFile": data_file})
        return {"status": "OK", "data": {"id": 1, "latestVersion": {"files": files}}}

    def datafile_requests(self) -> list[str]:
        return [r for r in self.requests if r.startswith("/api/access/datafile/")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def localhost_only(monkeypatch):
    """Fail any connection to anything but 127.0.0.1, and keep proxies out of the way."""
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        if address[0] != "127.0.0.1":
            raise AssertionError(f"test tried to connect to {address}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def dataverse():
    fake = FakeDataverse()
    yield fake
    fake.close()


def run(out: Path, dataverse: FakeDataverse, *extra: str) -> int:
    return main(["--out", str(out), "--server", dataverse.url, *extra])


def test_download_builds_the_loader_layout(tmp_path, dataverse, capsys):
    out = tmp_path / "ham"
    assert run(out, dataverse) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i}.jpg" for i in IMAGES]
    assert (out / "HAM10000_metadata.csv").read_bytes() == metadata_csv()
    assert "?format=original" in dataverse.datafile_requests()[0]  # the ingested table came back as CSV
    assert "/api/access/datafile/14" not in dataverse.requests  # files we do not need are not fetched
    assert not list((out / "archives").glob("*.zip")), "archives are removed unless --keep-archives"
    assert not list(out.rglob("*.part"))
    assert f"done: {len(IMAGES)} images" in capsys.readouterr().out

    samples = {s.path.stem: s for s in load_ham10000(out)}
    assert set(samples) == set(IMAGES)
    for image_id, (lesion, dx) in IMAGES.items():
        s = samples[image_id]
        assert (s.detail, s.group) == (dx, "ham:" + lesion)
        assert s.path == out / "images" / f"{image_id}.jpg"
    assert [samples[i].label for i in IMAGES] == ["nevus", "nevus", "vascular", "other", "other"]


def test_checksum_mismatch_fails_cleanly_and_leaves_no_file(tmp_path, dataverse, capsys):
    dataverse.checksums[13] = "0" * 32
    out = tmp_path / "ham"
    assert run(out, dataverse, "--keep-archives") == 1
    err = capsys.readouterr().err
    assert "checksum mismatch for HAM10000_images_part_2.zip" in err
    assert "Traceback" not in err
    assert not [p for p in out.rglob("*") if p.name.startswith("HAM10000_images_part_2.zip")]
    assert not list(out.rglob("*.part"))


def part_file(out: Path, name: str = "HAM10000_images_part_1.zip") -> Path:
    return out / "archives" / (name + ".part")


@pytest.mark.parametrize("ranges", [True, False], ids=["server-continues", "server-sends-all-again"])
def test_a_download_that_stops_early_is_kept_and_continued_by_the_next_run(tmp_path, dataverse, capsys, ranges):
    dataverse.cut[12] = 100
    dataverse.ranges = ranges
    out = tmp_path / "ham"
    assert run(out, dataverse) == 1
    err = capsys.readouterr().err
    assert "downloading HAM10000_images_part_1.zip stopped early: got 100 of" in err and "Traceback" not in err
    assert "run the same command again to continue" in err
    assert part_file(out).read_bytes() == dataverse.files[12]["data"][:100]

    del dataverse.cut[12]  # the connection is back
    dataverse.range_headers.clear()
    assert run(out, dataverse) == 0
    assert (12, "bytes=100-") in dataverse.range_headers  # only the rest was asked for
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i}.jpg" for i in IMAGES]
    assert not list(out.rglob("*.part"))


def test_a_kept_part_that_does_not_match_is_deleted_and_fetched_again(tmp_path, dataverse, capsys):
    out = tmp_path / "ham"
    (out / "archives").mkdir(parents=True)
    part_file(out).write_bytes(b"x" * 100)  # not the start of this file
    assert run(out, dataverse) == 1
    assert "checksum mismatch for HAM10000_images_part_1.zip" in capsys.readouterr().err
    assert not part_file(out).exists()
    assert run(out, dataverse) == 0


def test_a_complete_part_is_checked_without_asking_the_server(tmp_path, dataverse):
    out = tmp_path / "ham"
    (out / "archives").mkdir(parents=True)
    part_file(out).write_bytes(dataverse.files[12]["data"])  # cut off after the last byte, before the check
    assert run(out, dataverse) == 0
    assert "/api/access/datafile/12" not in dataverse.datafile_requests()
    assert (out / "images" / "ISIC_0000001.jpg").is_file()


def test_a_part_the_server_cannot_continue_is_started_again(tmp_path, dataverse):
    dataverse.listed_sizes = False  # without a listed size, a stale part longer than the file gets past the client
    out = tmp_path / "ham"
    (out / "archives").mkdir(parents=True)
    part_file(out).write_bytes(b"x" * (len(dataverse.files[12]["data"]) + 10))
    assert run(out, dataverse) == 0  # 416 Range Not Satisfiable: the part is dropped and the file fetched whole
    assert [r for i, r in dataverse.range_headers if i == 12] == [f"bytes={len(dataverse.files[12]['data']) + 10}-",
                                                                  None]
    assert (out / "images" / "ISIC_0000001.jpg").is_file()


def test_ctrl_c_keeps_the_part_received_and_the_next_run_continues_it(tmp_path, dataverse, capsys, monkeypatch):
    real_read = http.client.HTTPResponse.read
    calls = {"n": 0}

    def read_then_interrupt(self, *args):
        if "datafile/12" in dataverse.requests[-1]:
            calls["n"] += 1
            if calls["n"] == 2:  # after the first chunk has been written
                raise KeyboardInterrupt
        return real_read(self, 50) if "datafile/12" in dataverse.requests[-1] else real_read(self, *args)

    monkeypatch.setattr(http.client.HTTPResponse, "read", read_then_interrupt)
    out = tmp_path / "ham"
    assert run(out, dataverse) == 130
    assert "run the same command again" in capsys.readouterr().err
    assert part_file(out).read_bytes() == dataverse.files[12]["data"][:50]

    monkeypatch.setattr(http.client.HTTPResponse, "read", real_read)
    dataverse.range_headers.clear()
    assert run(out, dataverse) == 0
    assert (12, "bytes=50-") in dataverse.range_headers
    assert not list(out.rglob("*.part"))


class FullDisk:
    """A file opened for writing on a disk that is full."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_too_little_space_is_said_before_anything_is_downloaded(tmp_path, dataverse, capsys, monkeypatch):
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real_usage(path)._replace(free=1000))
    assert run(tmp_path / "ham", dataverse) == 1
    err = capsys.readouterr().err
    assert "has 0.0 GB free, and HAM10000 needs about" in err and "free some space, or give another --out" in err
    assert not dataverse.datafile_requests()


def test_what_is_on_disk_already_counts_towards_the_space_needed(tmp_path, dataverse, monkeypatch, capsys):
    """An archive downloaded but not unpacked (its unpacking filled the disk) needs no room of its own again."""
    out = tmp_path / "ham"
    (out / "archives").mkdir(parents=True)
    part_1, part_2 = dataverse.files[12]["data"], dataverse.files[13]["data"]
    (out / "archives" / "HAM10000_images_part_1.zip").write_bytes(part_1)
    metadata = len(dataverse.files[11]["original"])
    needed = metadata + len(part_1) + len(part_2) + max(metadata, len(part_1), len(part_2)) - len(part_1)
    real_usage = shutil.disk_usage
    for free, status in ((needed - 1, 1), (needed, 0)):
        monkeypatch.setattr(shutil, "disk_usage", lambda path: real_usage(path)._replace(free=free))
        assert run(out, dataverse) == status
    assert "needs about" in capsys.readouterr().err
    assert "/api/access/datafile/12" not in dataverse.datafile_requests()


def test_a_disk_that_fills_up_says_to_free_space_not_only_to_run_again(tmp_path, dataverse, capsys, monkeypatch):
    """Told only "run the same command again", people had run it again and again into the same full disk."""
    real_open = Path.open

    def open_on_a_full_disk(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        return FullDisk(f) if self.name == "HAM10000_images_part_1.zip.part" and "b" in mode and "r" not in mode else f

    out = tmp_path / "ham"
    with monkeypatch.context() as full:
        full.setattr(Path, "open", open_on_a_full_disk)
        assert run(out, dataverse) == 1
    err = capsys.readouterr().err
    assert f"cannot write {part_file(out)}: the disk is full: free some space" in err and "Traceback" not in err

    def unpacking_on_a_full_disk(src, dst, *args):
        raise OSError(errno.ENOSPC, "No space left on device")  # a write names no file

    with monkeypatch.context() as full:  # the download done, its unpacking fills the disk
        full.setattr(shutil, "copyfileobj", unpacking_on_a_full_disk)
        assert run(out, dataverse) == 1
    err = capsys.readouterr().err
    assert "/images/ISIC_0000001.jpg: the disk is full: free some space" in err and "Traceback" not in err
    assert (out / "archives" / "HAM10000_images_part_1.zip").is_file()  # kept until unpacked
    assert run(out, dataverse) == 0  # room again


def test_second_run_skips_verified_files(tmp_path, dataverse, capsys):
    out = tmp_path / "ham"
    assert run(out, dataverse) == 0
    assert len(dataverse.datafile_requests()) == 3
    dataverse.requests.clear()
    assert run(out, dataverse) == 0
    assert dataverse.requests and not dataverse.datafile_requests()  # only the listing
    assert "skipping" in capsys.readouterr().out


def test_kept_archives_are_reused_without_downloading(tmp_path, dataverse):
    out = tmp_path / "ham"
    assert run(out, dataverse, "--keep-archives") == 0
    assert (out / "archives" / "HAM10000_images_part_1.zip").is_file()
    (out / "images" / "ISIC_0000001.jpg").unlink()
    dataverse.requests.clear()
    assert run(out, dataverse, "--keep-archives") == 0
    assert not dataverse.datafile_requests()
    assert (out / "images" / "ISIC_0000001.jpg").is_file()


def test_corrupt_kept_archive_is_downloaded_again(tmp_path, dataverse):
    out = tmp_path / "ham"
    assert run(out, dataverse, "--keep-archives") == 0
    (out / "archives" / "HAM10000_images_part_1.zip.done").unlink()
    (out / "archives" / "HAM10000_images_part_1.zip").write_bytes(b"truncated")
    dataverse.requests.clear()
    assert run(out, dataverse, "--keep-archives") == 0
    assert dataverse.datafile_requests() == ["/api/access/datafile/12"]


def test_zip_with_parent_path_entry_is_refused(tmp_path, dataverse, capsys):
    dataverse.files[12]["data"] = make_zip({"ISIC_0000001.jpg": jpg(0), "../evil.jpg": jpg(1)})
    out = tmp_path / "ham"
    assert run(out, dataverse) == 1
    err = capsys.readouterr().err
    assert "HAM10000_images_part_1.zip" in err and "unsafe" in err and "../evil.jpg" in err
    assert "Traceback" not in err
    assert not list(tmp_path.rglob("evil.jpg"))
    assert not (out / "images" / "ISIC_0000001.jpg").exists(), "nothing is unpacked from a refused archive"


def test_missing_file_in_listing_is_reported(tmp_path, dataverse, capsys):
    del dataverse.files[13]
    assert run(tmp_path / "ham", dataverse) == 1
    assert "does not list HAM10000_images_part_2.zip" in capsys.readouterr().err


def test_unreachable_server_is_a_clear_error(tmp_path, capsys):
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["--out", str(tmp_path / "ham"), "--server", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach") and "Traceback" not in err


def test_tab_separated_metadata_becomes_csv(tmp_path):
    src = tmp_path / "HAM10000_metadata.tab"
    src.write_text('lesion_id\timage_id\tdx\tdx_type\tage\tsex\tlocalization\n'
                   '"HAM_0000001"\t"ISIC_0000001"\t"nv"\t"follow_up"\t45.0\t"female"\t"lower extremity"\n')
    dest = tmp_path / "HAM10000_metadata.csv"
    assert write_metadata(src, dest) == 1
    assert dest.read_text() == ("lesion_id,image_id,dx,dx_type,age,sex,localization\n"
                                "HAM_0000001,ISIC_0000001,nv,follow_up,45.0,female,lower extremity\n")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DownloadError, match="does not look like"):
        write_metadata(tmp_path / "bad.csv", tmp_path / "out.csv")


def test_a_server_given_without_its_scheme_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "ham"), "--server", "dataverse.harvard.edu"])
    assert stop.value.code == 2 and "not a web address: start it with https://" in capsys.readouterr().err
