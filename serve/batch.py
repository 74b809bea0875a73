"""Score a folder of images into a CSV: `python -m serve.batch FOLDER --out scores.csv`.

- Recursive; picks up jpg, jpeg, jfif, jpe, jif, png, heic, heif, webp, avif, bmp, tif(f), gif; follows
  symlinked folders, each real folder once (no loops), as training does, and
  never writes into the input folder unless `--out` or `--heatmaps` points
  there. A heatmaps folder holds a `.spotcheck-heatmaps` file, and any run
  leaves such a folder out of the scoring, with or without `--heatmaps`; a
  `--heatmaps` folder that holds photos of its own is refused.
- One row per file, written as it goes: a bad file gets an `error` row with
  the reason, and the run goes on. Files not named as photos get no row; the
  run names them at its end, and any folder it could not open.
- Decoding and framing run in parallel threads while the network scores
  whole batches on one thread; memory holds a few batches of photos at a
  time however large the folder (and the list of its file names, made first).
- `--backend auto` (the default) runs the network in ONNX Runtime when the
  checkpoint has an up-to-date export (`python -m model.export`), without
  importing torch; PyTorch otherwise.
- `spots` and `frame` say what was checked: how many spots the framing saw
  (0: none stood out and the middle square of the photo was checked; 2 or more: the most
  prominent one was checked, and `--heatmaps` shows which) and the box
  `x0 y0 x1 y1` in pixels of the upright photo.
- `--heatmaps DIR` writes each heatmap at the image's own relative path
  under DIR, with `.png` added (`a/b.jpg` -> `DIR/a/b.jpg.png`); none for a
  photo too small, dark or blurred to look at, as on the web page.
- `--resume` continues an interrupted run: files already in the CSV are
  skipped (compared as the files themselves, however the folder is spelled
  or whichever linked folder reached them), so
  every file appears exactly once; a file reached twice in one run (a link to
  a photo that is also in the folder) is scored once. Files whose rows are
  errors are tried again (fixed or replaced since, they are scored), their
  old rows replaced. A CSV another run is
  writing is refused (on Linux and macOS: their rows would interleave).
- The CSV is UTF-8 (no byte-order mark), comma-separated, with a dot for
  decimals; a file name's bytes that are not UTF-8 (old Windows zips,
  network shares) are written as `\\xNN`, so that any CSV reader takes it.
- Exit status 0 if at least one file was scored, 1 if none could be or the
  disk filled up, 2 for bad arguments or a CSV that cannot be written (no
  permission, a file in the way), 130 when interrupted (Ctrl+C, or a `kill`:
  the CSV keeps every row written).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import io
import os
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
from tqdm import tqdm

try:
    import fcntl  # locks the CSV while a run writes it
except ImportError:  # Windows: not locked
    fcntl = None

from data.datasets import CLASSES, files_under
from data.flags import (interrupt_on_termination, named_path, path_argument, plain_warnings, positive_int,
                        write_problem)
from data.images import IMAGE_SUFFIXES, is_image_file
from model.checkpoint import CheckpointError
from model.decision import UNSURE
from model.predictor import BACKENDS, Prediction, Predictor, heatmap_beside

# How `python -m serve.batch` runs; bench/bench.py measures with the same settings.
WORKERS = 2  # decoding threads
BATCH_SIZE = 32
# The network runs on one thread: the decoding threads already keep the cores busy. On 2 cores,
# with ONNX Runtime (the default backend), LiteNet scored 10,015 files in 42-43 s on 1 thread and
# 43.5-44 s on 2 (two runs each). PyTorch differs by network: 1 thread took SpotNet from ~120 to
# ~170 images/s, its OpenMP threads waiting at barriers for threads the decoders pushed off a core,
# while LiteNet, whose network dominates, does better on 2 (118 against 104 images/s,
# bench/results.md). Give more with --threads on a machine with many cores.
NETWORK_THREADS = 1

FIELDS = ("path", "label", "confidence", "p_vascular", "p_nevus", "p_other", "reason", "spots", "frame", "error",
          "model")
SUMMARY_LABELS = (*CLASSES, UNSURE, "error")  # the `label` column's values, in the summary's order
MODEL_ID_CHARS = 12  # the `model` column: the start of the checkpoint's SHA-256, as its .sha256 file gives it
ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}  # how it is read: a CSV from before path_text
# Written into every heatmaps folder, so that a later run over it, or over a folder that holds it, leaves it out.
HEATMAPS_MARK = ".spotcheck-heatmaps"


def is_heatmaps(folder: str | os.PathLike) -> bool:
    """Whether batch scoring wrote heatmaps into `folder`."""
    return os.path.isfile(os.path.join(folder, HEATMAPS_MARK))


def find_files(folder: Path, skip: Path | None = None, *,
               unreadable: Callable[[OSError], None] | None = None) -> Iterator[Path]:
    """Files under `folder`, as training finds them (`data.datasets.files_under`: sorted, symlinked folders followed
    once, hidden files and `__MACOSX` folders left out, a folder that cannot be read a warning or handed to
    `unreadable`), without heatmaps: the folder `skip` (this run's) and every folder an earlier run marked as one."""
    skip_real = os.path.realpath(skip) if skip is not None else None

    def leave_out(path: str) -> bool:
        return os.path.realpath(path) == skip_real or is_heatmaps(path)

    return files_under(folder, leave_out, unreadable=unreadable)


def find_images(folder: Path, skip: Path | None = None, *,
                unreadable: Callable[[OSError], None] | None = None) -> Iterator[Path]:
    """The image files of `find_files`: those batch scoring scores."""
    return (path for path in find_files(folder, skip, unreadable=unreadable) if is_image_file(path.name))


def not_scored_note(folder: Path, out: Path, skip: Path | None = None) -> str | None:
    """Lines naming what under `folder` no row mentions, or None: the files not named as photos (a camera's raw
    `.dng`, a PDF), and the folders that could not be read. Without it the files had been left out without a word,
    and the folders' warning scrolled away above the progress bar."""
    own_csv = os.path.realpath(out)  # (os.path, not Path.resolve: that raises on a link loop)
    unread: list[OSError] = []
    others = [p for p in find_files(folder, skip, unreadable=unread.append)
              if not is_image_file(p.name) and os.path.realpath(p) != own_csv]
    notes = []
    if others:
        named = ", ".join(path_text(p.relative_to(folder)) for p in others[:3]) + (", ..." if len(others) > 3 else "")
        count, were = (f"{len(others)} other files", "were") if len(others) > 1 else ("1 other file", "was")
        notes.append(f"note: {count} under {folder} {were} not scored, not being named as photos ({named}); "
                     f"SpotCheck reads {', '.join(IMAGE_SUFFIXES)}")
    if unread:
        notes.append(f"note: {unread_folders(unread, folder)}")
    return "\n".join(notes) or None


def shown_under(path: str, folder: Path) -> str:
    """`path` as a note names it: relative to `folder`, or `folder` itself."""
    relative = os.path.relpath(path, folder)
    return path_text(folder if relative == "." else relative)


def unread_folders(unread: list[OSError], folder: Path) -> str:
    """What the walk of `folder` could not open, as "2 folders under X could not be read, ... (a: Permission
    denied, ...)": each real folder once (a link to one is the same folder)."""
    unread = list({os.path.realpath(err.filename): err for err in unread}.values())
    named = ", ".join(f"{shown_under(err.filename, folder)}: {err.strerror}" for err in unread[:3])
    folders = f"{len(unread)} folders" if len(unread) > 1 else "1 folder"
    return (f"{folders} under {folder} could not be read, so any photos in them were not scored ({named}"
            f"{', ...' if len(unread) > 3 else ''})")


class ResumeError(ValueError):
    """The CSV to resume cannot be continued: another version's columns, or another model's rows."""


class BusyError(OSError):
    """Another batch run is writing the CSV."""


def write_alone(f: io.TextIOBase, out: Path) -> None:
    """Lock the open CSV `f` for this run (released when it is closed, or the process ends), or raise BusyError if
    another run holds it: two runs appending to one CSV interleave their rows, and half rows garble it."""
    if fcntl is None:
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BusyError(f"{out} is being written by another batch run: let it finish (or stop it), or write to another "
                        "--out") from None


def model_id(predictor: Predictor) -> str:
    return predictor.checkpoint_sha256[:MODEL_ID_CHARS]


def already_scored(out: Path, model: str | None = None) -> dict[str, str]:
    """The label of each file in an existing CSV, by absolute path; read once. A half-written last line (from a
    kill) is cut off. A file without this version's header (another version's CSV, or not a CSV at all), or with
    rows from a model other than `model`, is refused before anything in it is changed."""
    if not out.is_file() or out.stat().st_size == 0:
        return {}
    data = out.read_bytes()
    header = ",".join(FIELDS).encode() + b"\r\n"  # as csv.DictWriter writes it
    if not data.startswith(header):
        first = data.split(b"\n", 1)[0][:200].decode("utf-8", "replace").strip()
        raise ResumeError(f"{out} does not start with the columns {','.join(FIELDS)} (it starts {first!r}): it "
                          "was written by another version, or is not a scores CSV; score into a new file")
    # Whole rows only: rows end in CRLF, and a CRLF inside a quoted file name has an odd number of quotes before it.
    end = data.rfind(b"\r\n")
    while data.count(b'"', 0, end) % 2:
        end = data.rfind(b"\r\n", 0, end)
    complete = data[: end + 2]
    rows = list(csv.DictReader(io.StringIO(complete.decode(**ENCODING), newline="")))
    others = sorted({row["model"] or "" for row in rows} - {model}) if model is not None else []
    if others:
        raise ResumeError(f"{out} holds rows scored by another model ({', '.join(others)}; this one is {model}): "
                          "resume with the same --checkpoint, or score into a new file")
    if len(complete) < len(data):
        with out.open("r+b") as f:
            f.truncate(len(complete))
    return {os.path.abspath(row["path"]): row["label"] for row in rows}


def path_text(path: str | os.PathLike) -> str:
    """`path` as the CSV holds it: always valid UTF-8, a name's bytes that are not written as `\\xNN`. One such
    name, written as it was, had made the whole CSV unreadable to pandas and to Python's own csv module."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def row_for(path: Path, prediction: Prediction | None, error: str = "", *, model: str = "") -> dict[str, str]:
    path = path_text(os.path.abspath(path))  # absolute, so that --resume finds it from any working directory
    if prediction is None:
        return {"path": path, "label": "error", "error": error, "model": model}
    p = prediction.probabilities
    return {
        "path": path,
        "label": prediction.label,
        "confidence": f"{prediction.confidence:.4f}",
        "p_vascular": f"{p['vascular']:.4f}",
        "p_nevus": f"{p['nevus']:.4f}",
        "p_other": f"{p['other']:.4f}",
        "reason": prediction.reason,
        "spots": str(prediction.framing.spots),
        "frame": " ".join(map(str, prediction.framing.box)),
        "error": "",
        "model": model,
    }


def score_folder(predictor: Predictor, folder: Path, out: Path, *, resume: bool = False,
                 heatmaps: Path | None = None, batch_size: int = BATCH_SIZE, workers: int = WORKERS,
                 progress: bool = True) -> tuple[int, int]:
    """Score every image under `folder` into `out`; returns (scored, errors) for this run."""
    model = model_id(predictor)
    out.parent.mkdir(parents=True, exist_ok=True)
    new_csv = not out.exists()
    scored = errors = lost_heatmaps = 0
    with contextlib.ExitStack() as open_files:
        # "a", not "w": a CSV another run is writing must not be emptied.
        f = open_files.enter_context(out.open("a", newline="", **ENCODING))
        write_alone(f, out)
        listed = already_scored(out, model) if resume else {}
        # The files in the CSV, scored or not (an error row: tried again), by the file itself: one reached through a
        # linked folder has been in the CSV under either path.
        done, failed = {}, {}
        for path, label in listed.items():
            for name in (path_text(os.path.realpath(path)), path_text(path)):
                (failed if label == "error" else done)[name] = path
        todo, seen, retried = [], set(), set()  # seen: this run's files, by their real path's bytes
        for path in find_images(folder, skip=heatmaps):
            real = os.path.realpath(path)
            key, names = os.fsencode(real), {path_text(real), path_text(os.path.abspath(path))}
            if key not in seen and not names & done.keys():
                seen.add(key)
                todo.append(path)
                retried |= {failed[name] for name in names & failed.keys()}  # an error row: tried again
        if heatmaps:  # after the CSV's own checks: a run refused there leaves no heatmaps folder
            try:
                make_heatmaps_folder(heatmaps)
            except OSError:
                if new_csv:  # nor an empty CSV
                    out.unlink(missing_ok=True)
                raise
        if retried:  # their error rows go, only now that scoring starts: each file keeps one row
            f = open_files.enter_context(rewritten_without(out, retried, f))
            print(f"trying again {len(retried)} file{'s' * (len(retried) != 1)} that could not be read before")
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if not (resume and out.stat().st_size > 0):
            f.truncate(0)
            writer.writeheader()
        answers = predictor.predict_files(todo, batch_size=batch_size, workers=workers)
        for path, answer in tqdm(answers, total=len(todo), desc="scoring", unit="img", disable=not progress):
            if isinstance(answer, str):  # the reason the file cannot be used
                writer.writerow(row_for(path, None, answer, model=model))
                errors += 1
            else:
                if heatmaps and not answer.problem:  # before the row: a resumed run leaves no heatmap missing
                    lost_heatmaps += not write_heatmap(answer, heatmaps / f"{path.relative_to(folder)}.png")
                writer.writerow(row_for(path, answer, model=model))
                scored += 1
            f.flush()  # every row on disk as it is written: an interrupted run resumes after it
    if lost_heatmaps:
        print(f"warning: {lost_heatmaps} heatmap{'s' * (lost_heatmaps != 1)} could not be written (the warnings above "
              "say why); their rows are in the CSV", file=sys.stderr)
    return scored, errors


def rewritten_without(out: Path, paths: set[str], f: io.TextIOBase) -> io.TextIOBase:
    """Put in the place of `out`, open as `f`, a copy without the rows of `paths` (as `already_scored` names them), and
    return the copy open at its end and locked for this run. The copy is written whole beside `out` (beside the file
    itself, with its permissions, where `out` is a link to it) and then renamed over it in one step, so a run stopped
    (or a disk filling up) midway leaves `out` as it was."""
    target = Path(os.path.realpath(out))
    rows = csv.DictReader(io.StringIO(target.read_bytes().decode(**ENCODING), newline=""))
    copy = target.with_name(f".{target.name}.rewrite")
    new = copy.open("w", newline="", **ENCODING)
    try:
        write_alone(new, out)
        writer = csv.DictWriter(new, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(row for row in rows if os.path.abspath(row["path"]) not in paths)
        new.flush()
        os.fsync(new.fileno())
        shutil.copymode(target, copy)
        if fcntl is None:  # Windows renames no file over one that is open (and nothing is locked there)
            f.close()
        os.replace(copy, target)
        f.close()  # only now: its lock kept another run out until the copy, locked too, took its place
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk fails the close's flush too
            new.close()
        copy.unlink(missing_ok=True)
        raise
    return new


def make_heatmaps_folder(heatmaps: Path) -> None:
    heatmaps.mkdir(parents=True, exist_ok=True)
    (heatmaps / HEATMAPS_MARK).write_text("Heatmaps written by SpotCheck's batch scoring (serve.batch): scoring a "
                                          "folder that holds this one leaves it out.\n")


def is_heatmap_name(path: Path) -> bool:
    """Named as batch scoring names a heatmap: the photo's own name with .png added (`b.jpg.png`)."""
    return path.suffix.lower() == ".png" and is_image_file(path.stem)


def write_heatmap(prediction: Prediction, target: Path) -> bool:
    """Save the framed spot and, beside it, its heatmap as a PNG, and say whether it was. A file that cannot be
    written is a warning, not a stop, and leaves no empty or half file behind (a full disk had left hundreds, named
    as heatmaps)."""
    picture = heatmap_beside(prediction.square, prediction.heatmap)
    png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))[1]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png.tobytes())  # Python, not OpenCV, handles odd file names
        return True
    except OSError as err:
        with contextlib.suppress(OSError):
            if target.is_file():
                target.unlink()
        tqdm.write(f"warning: no heatmap for {path_text(target)}: {err.strerror or err}", file=sys.stderr)
        return False


def make_predictor(checkpoint: str | os.PathLike | None = None, backend: str = "auto",
                   threads: int | None = NETWORK_THREADS) -> Predictor:
    """The predictor batch scoring uses."""
    return Predictor(checkpoint, backend=backend, threads=threads)


def argument_problem(args: argparse.Namespace, folder: Path, out: Path) -> str | None:
    """What is wrong with the command line's folders and files, before anything is loaded or written; None if
    nothing is."""
    if not folder.is_dir():
        return (f"{folder} is a file: give the folder that holds the photos (the web page answers one photo)"
                if folder.exists() else f"{folder} does not exist")
    if args.out == "":
        return "--out is empty; give the CSV file to write, e.g. scores.csv"
    if out.is_dir() or (args.out or "").endswith(("/", os.sep)):
        shown = args.out or out  # as typed: "new/", not "new"
        return (f"--out {shown} {'is' if out.is_dir() else 'names'} a folder; give the CSV file to write, e.g. "
                f"{out / 'scores.csv'}")
    if is_image_file(out.name):  # a photo named by a slip: --overwrite had turned it into the CSV
        return f"--out {out} is named as a photo; give the CSV file to write, e.g. {out.with_name('scores.csv')}"
    if out.is_file() and out.stat().st_size > 0 and not (args.resume or args.overwrite):
        return f"{out} already exists: add --resume to keep its rows and score the rest, or --overwrite to replace it"
    heatmaps = args.heatmaps
    if heatmaps is not None and heatmaps.exists() and not heatmaps.is_dir():
        return f"--heatmaps {heatmaps} is a file; give a folder for the heatmaps"
    if heatmaps is not None and heatmaps.resolve() == folder.resolve():
        return (f"--heatmaps {heatmaps} is the input folder: the heatmaps would mix with the photos; use a folder of "
                f"their own, e.g. {folder / 'heatmaps'}")
    if heatmaps is not None and heatmaps.is_dir() and not is_heatmaps(heatmaps):
        # (an unmarked folder of heatmaps alone: an older version's, which marked only one inside the input folder)
        photo = next((p for p in find_images(heatmaps) if not is_heatmap_name(p)), None)
        if photo is not None:  # inside the input folder they would also be left out of the scoring
            return (f"--heatmaps {heatmaps} holds photos of its own (e.g. {photo.relative_to(heatmaps)}): the "
                    f"heatmaps would mix with them; use a new folder, e.g. {heatmaps / 'heatmaps'}")
    if args.out is None and folder.resolve() in out.resolve().parents:
        return f"the default output {out} would land inside the input folder; pass --out to choose"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve.batch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=path_argument, help="folder of images (searched recursively)")
    parser.add_argument("--out", default=None, help="CSV to write (default: ./scores.csv)")
    parser.add_argument("--checkpoint", type=named_path, default=None,
                        help="model checkpoint (default: the embedded model)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="run the network in PyTorch or ONNX Runtime (default: ONNX Runtime when exported)")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --out and score the rest")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out and score everything")
    parser.add_argument("--heatmaps", type=path_argument, default=None, help="also write a heatmap PNG per image here")
    parser.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE,
                        help=f"images per network batch (default: {BATCH_SIZE})")
    parser.add_argument("--workers", type=positive_int, default=WORKERS, help=f"decoding threads (default: {WORKERS})")
    parser.add_argument("--threads", type=positive_int, default=NETWORK_THREADS,
                        help=f"threads for the network (default: {NETWORK_THREADS})")
    args = parser.parse_args(argv)
    if args.resume and args.overwrite:
        parser.error("--resume keeps the rows in --out and --overwrite replaces them: choose one")

    folder = args.folder
    out = Path(args.out if args.out is not None else "scores.csv")
    if problem := argument_problem(args, folder, out):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        predictor = make_predictor(args.checkpoint, args.backend, args.threads)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    unread: list[OSError] = []  # folders the walk could not open, said here: its warning is left to the scoring
    if next(find_images(folder, skip=args.heatmaps, unreadable=unread.append), None) is None:
        print(f"error: no image files ({', '.join(IMAGE_SUFFIXES)}) found under {folder}", file=sys.stderr)
        if unread:
            print(f"note: {unread_folders(unread, folder)}", file=sys.stderr)
        return 1
    try:
        scored, errors = score_folder(predictor, folder, out, resume=args.resume, heatmaps=args.heatmaps,
                                      batch_size=args.batch_size, workers=args.workers, progress=True)
    except (ResumeError, BusyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # --out or --heatmaps under a file, no permission (refused: 2), a full disk (failed: 1)
        print(f"error: cannot write {err.filename or out}: {write_problem(err)}", file=sys.stderr)
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return 2
        if out.is_file():
            print(f"the rows written so far are in {out}: make room, then add --resume to score the rest (it drops "
                  "a last row cut short)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: the rows written so far are in {out}; add --resume to score the rest", file=sys.stderr)
        return 130
    answers = Counter(already_scored(out).values())  # the whole CSV, an earlier run's rows included
    scored_before = args.resume and scored == 0 and any(label != "error" for label in answers)
    if scored_before and errors == 0:
        print(f"nothing left to score: every image under {folder} is in {out} already")
    else:
        unread = f"; {errors} could not be read (their rows say why, in the error column)" if errors else ""
        print(f"scored {scored} image{'s' * (scored != 1)}{unread}; wrote {out}")
    rows = sum(answers.values())
    print(f"{out} holds {rows} row{'s' * (rows != 1)}: "
          + ", ".join(f"{answers[label]} {label}" for label in SUMMARY_LABELS if answers[label]))
    if note := not_scored_note(folder, out, args.heatmaps):
        print(note)
    if scored == 0 and not scored_before:
        print("error: no image could be scored", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    plain_warnings()
    interrupt_on_termination()
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # before scoring began (loading the model): nothing was written
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
