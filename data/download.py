"""Download HAM10000 from its official release: `python -m data.download --out DIR`.

The source is the Harvard Dataverse dataset doi:10.7910/DVN/DBW86T, read
through the Dataverse native API:

- `GET {server}/api/datasets/:persistentId/?persistentId=DOI` lists the files
  with their ids and checksums;
- `GET {server}/api/access/datafile/{id}` downloads one (`?format=original`
  for the metadata, which Dataverse ingested as a table: the original CSV is
  what the listed checksum is for).

Result, as `data.datasets.load_ham10000(DIR)` expects:

    DIR/HAM10000_metadata.csv
    DIR/images/ISIC_0024306.jpg ...

- Every download streams to a `.part` file and is checked against the
  checksum Dataverse lists; a mismatch deletes the file and stops.
- A transfer cut off (a dropped connection, Ctrl+C) keeps its `.part` file,
  and the next run continues it with an HTTP Range request (a server that
  does not support ranges sends the whole file again).
- Running again is cheap: a file already unpacked (recorded in
  `DIR/archives/NAME.done`) or already downloaded with the right checksum is
  not fetched again.
- The free space is checked first (an archive beside its unpacked images); a disk that fills up all the same, or
  a folder that cannot be written, is said as such, not as a reason to run again.
- Zip entries with absolute paths or `..` are refused.
- The zips are deleted once unpacked unless `--keep-archives`.
- Exit status 0 on success, 1 on any network, checksum, archive or disk error, 2 for a bad command line, 130 when
  stopped (Ctrl+C or a `kill`: run the same command again to continue).
"""
from __future__ import annotations

import argparse
import csv
import errno
import hashlib
import http.client
import json
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

from tqdm import tqdm

from data.datasets import table_delimiter
from data.flags import interrupt_on_termination, path_argument

DEFAULT_SERVER = "https://dataverse.harvard.edu"
DOI = "doi:10.7910/DVN/DBW86T"
IMAGE_ARCHIVES = ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip")
METADATA_STEM = "HAM10000_metadata"
METADATA_CSV = "HAM10000_metadata.csv"
METADATA_COLUMNS = ("lesion_id", "image_id", "dx")
TIMEOUT_S = 60
CHUNK = 1 << 20
USER_AGENT = "SpotCheck-data-download/1.0 (python urllib)"


class DownloadError(RuntimeError):
    """A download or unpacking step failed; the message says which and why."""


@dataclass(frozen=True)
class RemoteFile:
    id: int
    name: str  # the name it is saved under (the original name for ingested tables)
    checksum_type: str  # as Dataverse spells it: "MD5", "SHA-1", "SHA-256", ...
    checksum: str
    size: int | None
    ingested: bool  # a table Dataverse converted: fetch it with ?format=original

    @property
    def is_metadata(self) -> bool:
        return PurePosixPath(self.name).stem == METADATA_STEM


# ---------------------------------------------------------------- listing


def _get(url: str, timeout: float = TIMEOUT_S, headers: dict[str, str] | None = None):
    return urlopen(Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})}), timeout=timeout)


def list_files(server: str, doi: str = DOI) -> list[RemoteFile]:
    """The files of the latest published version of the dataset."""
    url = f"{server}/api/datasets/:persistentId/?{urlencode({'persistentId': doi})}"
    try:
        with _get(url) as resp:
            reply = json.load(resp)
    except HTTPError as err:
        raise DownloadError(f"the Dataverse at {server} answered {err.code} {err.reason} for {doi}") from None
    except (URLError, OSError, http.client.HTTPException) as err:
        raise DownloadError(f"cannot reach {server}: {getattr(err, 'reason', err)}") from None
    except json.JSONDecodeError:
        raise DownloadError(f"{url} did not return JSON: is {server} a Dataverse?") from None
    try:
        return [_parse_file(entry["dataFile"]) for entry in reply["data"]["latestVersion"]["files"]]
    except (KeyError, TypeError, ValueError) as err:
        raise DownloadError(f"unexpected dataset listing from {url}: {err!r}") from None


def _parse_file(df: dict) -> RemoteFile:
    checksum = df.get("checksum") or {"type": "MD5", "value": df["md5"]}
    ingested = bool(df.get("originalFileFormat"))
    name = df.get("originalFileName") if ingested and df.get("originalFileName") else df["filename"]
    size = df.get("originalFileSize") if ingested else df.get("filesize")
    return RemoteFile(int(df["id"]), name, checksum["type"], checksum["value"].lower(), size, ingested)


def needed_files(files: list[RemoteFile]) -> list[RemoteFile]:
    """The metadata table and the two image zips, or a DownloadError naming what is missing."""
    by_name = {f.name: f for f in files}
    metadata = [f for f in files if f.is_metadata]
    missing = [name for name in IMAGE_ARCHIVES if name not in by_name]
    if not metadata:
        missing.insert(0, METADATA_STEM + ".csv/.tab")
    if missing:
        raise DownloadError(f"the dataset does not list {', '.join(missing)}; found: {sorted(by_name)}")
    return [metadata[0]] + [by_name[name] for name in IMAGE_ARCHIVES]


# ---------------------------------------------------------------- downloading


def _hasher(checksum_type: str):
    name = checksum_type.lower().replace("-", "")
    if name not in hashlib.algorithms_available:
        raise DownloadError(f"unsupported checksum type {checksum_type!r}")
    return hashlib.new(name)


def _hash_of(path: Path, checksum_type: str):
    """A hash object fed with the file's bytes, to be continued with more (`download`) or read."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, lambda: _hasher(checksum_type))


def file_digest(path: Path, checksum_type: str) -> str:
    return _hash_of(path, checksum_type).hexdigest()


def datafile_url(server: str, remote: RemoteFile) -> str:
    url = f"{server}/api/access/datafile/{remote.id}"
    return url + "?format=original" if remote.ingested else url


def _continues_at(resp, offset: int) -> bool:
    """True if `resp` is a 206 reply carrying the file from byte `offset` on (else it is the whole file)."""
    return resp.status == 206 and (resp.headers.get("Content-Range") or "").startswith(f"bytes {offset}-")


def download(url: str, dest: Path, remote: RemoteFile) -> None:
    """Stream `url` to `dest` via `dest.part`, checking the checksum on the way.

    A `.part` file left by a cut-off transfer is continued from where it stopped; only a checksum mismatch (or a
    server that cannot continue it) deletes it.
    """
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if remote.size and have > remote.size:  # not a prefix of this file
        part.unlink()
        have = 0
    h = _hasher(remote.checksum_type)
    received = have
    try:
        if remote.size and have == remote.size:  # all there already: cut off before the check
            h = _hash_of(part, remote.checksum_type)
        else:
            with _get(url, headers={"Range": f"bytes={have}-"} if have else None) as resp:
                if have and _continues_at(resp, have):
                    h = _hash_of(part, remote.checksum_type)
                    mode = "ab"
                else:  # a fresh start, or a server that sent the whole file
                    received, mode = 0, "wb"
                length = int(resp.headers.get("Content-Length") or 0)
                total = received + length if length else remote.size
                with part.open(mode) as f, tqdm(total=total, initial=received, unit="B", unit_scale=True,
                                                unit_divisor=1024, desc=remote.name) as bar:
                    while chunk := resp.read(CHUNK):
                        h.update(chunk)
                        f.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
    except HTTPError as err:
        if err.code == 416 and have:  # the server cannot continue this part: start it again, once
            part.unlink(missing_ok=True)
            return download(url, dest, remote)
        raise DownloadError(f"downloading {remote.name} failed: {url} answered {err.code} {err.reason}") from None
    except (URLError, OSError, http.client.HTTPException) as err:
        if isinstance(err, OSError) and not isinstance(err, URLError) and err.errno in LOCAL_ERRNOS:
            raise DownloadError(f"downloading {remote.name} failed: {local_problem(err, part)}") from None
        raise DownloadError(f"downloading {remote.name} failed: {getattr(err, 'reason', err)}; "
                            f"{_kept(part)}") from None
    if remote.size and received < remote.size:
        raise DownloadError(f"downloading {remote.name} stopped early: got {received:,} of {remote.size:,} bytes; "
                            f"{_kept(part)}")
    got = h.hexdigest()
    if got != remote.checksum:
        part.unlink()
        raise DownloadError(
            f"checksum mismatch for {remote.name}: expected {remote.checksum_type} {remote.checksum}, got {got}; "
            "the file was deleted, run again to retry")
    part.replace(dest)


# Errors of this machine's disk, not of the network: running again does not help until they are dealt with.
LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS}


def local_problem(err: OSError, path: Path | None = None) -> str:
    """What went wrong with a file on this machine (`path`, if the error does not name it), and what to do: free
    space, or write elsewhere. "Run again" alone had sent people round in circles on a full disk."""
    where = err.filename or path or "the download"
    then = "then run the same command again (what was downloaded is kept)"
    if err.errno == errno.ENOSPC:
        return f"cannot write {where}: the disk is full: free some space, or give another --out; {then}"
    if err.errno == errno.EDQUOT:
        return f"cannot write {where}: over your disk quota: free some space, or give another --out; {then}"
    if err.errno == errno.EFBIG:
        return f"cannot write {where}: the file system cannot hold a file this large: give an --out on another disk"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {where}: {err.strerror}: give an --out you can write to"
    return f"{where}: {err.strerror or err}"


def space_needed(remotes: list[RemoteFile], keep_archives: bool) -> int:
    """Bytes that downloading and unpacking `remotes` takes at its peak: each archive beside its unpacked images
    (JPEGs do not compress: about the archive's size again), and every archive with `keep_archives`."""
    sizes = [r.size or 0 for r in remotes]
    return sum(sizes) + (sum(sizes) if keep_archives else max(sizes, default=0))


def _kept(part: Path) -> str:
    size = part.stat().st_size if part.is_file() else 0
    return (f"the {size:,} bytes received are kept in {part.name}: run the same command again to continue"
            if size else "run again to retry")


# ---------------------------------------------------------------- unpacking


def _is_unsafe(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":")


def image_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The .jpg entries of an archive; any entry with an absolute path or `..` refuses the whole archive."""
    unsafe = [info.filename for info in zf.infolist() if _is_unsafe(info.filename)]
    if unsafe:
        raise DownloadError(f"refusing unsafe archive entries (absolute path or '..'): {unsafe[:5]}")
    return [info for info in zf.infolist()
            if not info.is_dir() and info.filename.lower().endswith(".jpg")
            and "__MACOSX" not in info.filename and not PurePosixPath(info.filename).name.startswith("._")]


def extract_images(archive: Path, images_dir: Path) -> list[str]:
    """Unpack the jpgs of `archive` flat into `images_dir`; returns their file names."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = image_members(zf)
            if not members:
                raise DownloadError("it holds no .jpg images")
            images_dir.mkdir(parents=True, exist_ok=True)
            names = []
            for info in tqdm(members, desc=f"unpacking {archive.name}", unit="img"):
                name = PurePosixPath(info.filename).name
                try:
                    with zf.open(info) as src, (images_dir / name).open("wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
                except OSError as err:  # a write names no file: this one, for the message (a full disk)
                    err.filename = err.filename or str(images_dir / name)
                    raise
                names.append(name)
    except zipfile.BadZipFile as err:
        raise DownloadError(f"{archive.name} is not a valid zip: {err}") from None
    except DownloadError as err:
        raise DownloadError(f"{archive.name}: {err}") from None
    return names


def write_metadata(src: Path, dest: Path) -> int:
    """Copy the metadata table to `dest` as comma-separated CSV; returns the row count."""
    with src.open(newline="", encoding="utf-8-sig") as f:
        header = f.readline()
        f.seek(0)
        rows = list(csv.reader(f, delimiter=table_delimiter(header)))
    if not rows or not set(METADATA_COLUMNS) <= set(rows[0]):
        raise DownloadError(f"{src.name} does not look like the HAM10000 metadata "
                            f"(header {rows[0] if rows else []}, need {list(METADATA_COLUMNS)})")
    tmp = dest.with_name(dest.name + ".part")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerows(rows)
    except OSError as err:  # a write names no file: this one, for the message (a full disk)
        err.filename = err.filename or str(tmp)
        raise
    tmp.replace(dest)
    return len(rows) - 1


# ---------------------------------------------------------------- one file, end to end


def _marker(archives: Path, remote: RemoteFile) -> Path:
    return archives / (remote.name + ".done")


def already_installed(out: Path, archives: Path, remote: RemoteFile) -> bool:
    """True if a previous run unpacked this exact file and what it produced is still there."""
    try:
        done = json.loads(_marker(archives, remote).read_text())
    except (OSError, ValueError):
        return False
    return (done.get("checksum") == f"{remote.checksum_type}:{remote.checksum}"
            and all((out / p).is_file() for p in done.get("files", [])))


def install(server: str, out: Path, remote: RemoteFile, keep_archives: bool) -> None:
    """Download (unless the archive on disk checks out), unpack, and record one dataset file (`fetch` skips one
    already unpacked)."""
    archives = out / "archives"
    archives.mkdir(parents=True, exist_ok=True)
    path = archives / remote.name
    if path.is_file() and file_digest(path, remote.checksum_type) == remote.checksum:
        print(f"{remote.name}: already downloaded, checksum OK")
    else:
        download(datafile_url(server, remote), path, remote)
    if remote.is_metadata:
        write_metadata(path, out / METADATA_CSV)
        produced = [METADATA_CSV]
    else:
        produced = [f"images/{name}" for name in extract_images(path, out / "images")]
    _marker(archives, remote).write_text(json.dumps(
        {"checksum": f"{remote.checksum_type}:{remote.checksum}", "files": produced}))
    if not keep_archives:
        path.unlink()


def check_layout(out: Path) -> tuple[int, list[str]]:
    """(images in `out/images`, metadata image ids with no image there)."""
    images = {p.stem for p in (out / "images").glob("*.jpg")}
    with (out / METADATA_CSV).open(newline="") as f:
        ids = [row["image_id"] for row in csv.DictReader(f)]
    return len(images), [i for i in ids if i not in images]


def fetch(out: Path, server: str = DEFAULT_SERVER, keep_archives: bool = False) -> int:
    """Download and unpack HAM10000 into `out`; returns the number of images."""
    server = server.rstrip("/")
    out.mkdir(parents=True, exist_ok=True)
    print(f"listing {DOI} on {server}")
    remotes = needed_files(list_files(server))
    todo = [r for r in remotes if not already_installed(out, out / "archives", r)]
    # An estimate: images left by an unpacking cut short count as still to come, and a kept part beside its archive
    # as received.
    on_disk = [out / "archives" / name for r in todo for name in (r.name, r.name + ".part")]  # received already
    received = sum(p.stat().st_size for p in on_disk if p.is_file())
    needed, free = space_needed(todo, keep_archives) - received, shutil.disk_usage(out).free
    if needed > free:  # before gigabytes are downloaded that cannot be unpacked
        raise DownloadError(f"{out} has {free / 1e9:.1f} GB free, and HAM10000 needs about {needed / 1e9:.1f} GB "
                            "more (its archives and their unpacked images): free some space, or give another --out")
    for remote in remotes:
        if remote in todo:
            install(server, out, remote, keep_archives)
        else:
            print(f"{remote.name}: already downloaded and unpacked, skipping")
    n_images, missing = check_layout(out)
    if missing:
        raise DownloadError(f"{len(missing)} images listed in {METADATA_CSV} are missing from {out / 'images'} "
                            f"(e.g. {missing[:3]})")
    return n_images


def web_address(text: str) -> str:
    """A server's base URL, as --server takes it."""
    if not text.startswith(("https://", "http://")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a web address: start it with https:// (e.g. {DEFAULT_SERVER})")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.download", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=path_argument, required=True, help="folder to fill (created if needed)")
    parser.add_argument("--server", type=web_address, default=DEFAULT_SERVER,
                        help=f"Dataverse base URL (default: {DEFAULT_SERVER})")
    parser.add_argument("--keep-archives", action="store_true", help="keep the downloaded zips in OUT/archives")
    args = parser.parse_args(argv)
    try:
        n_images = fetch(args.out, args.server, args.keep_archives)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # unpacking or writing the metadata: this machine's disk
        print(f"error: {local_problem(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to continue (finished files and the part of a download "
              "received so far are kept)", file=sys.stderr)
        return 130
    print(f"done: {n_images} images in {args.out / 'images'}, metadata in {args.out / METADATA_CSV}")
    return 0


if __name__ == "__main__":
    interrupt_on_termination()  # a `kill` keeps the part received and says so, as Ctrl+C does
    sys.exit(main())
