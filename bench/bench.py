"""SpotCheck benchmark: one script, one run, one table (also written to bench/results.md).

    .venv/bin/python bench/bench.py              # the full run: all 10,015 HAM10000 images
    .venv/bin/python bench/bench.py --limit 500 --out /tmp/quick.md  # a quick run, leaving results.md as it is

What it measures, for both backends (PyTorch and ONNX Runtime) where it applies:

- the model: parameters, FLOPs per image (model.net.count_flops), file sizes;
- single-image latency p50/p95: the model part only (`classify` of one
  prepared image: network, decision, heatmap) and file to answer
  (`read_image` + `prepare` + `classify`);
- the network on batches of 32 (images/s);
- batch scoring: `serve.batch.score_folder` on the HAM10000 images, with the
  settings `python -m serve.batch` uses; next to it the ceiling: images/s for
  only reading, decoding, framing and resizing the same files
  (`predictor.prepare`) with the same number of worker threads, and the ratio;
- peak RSS of batch scoring for 1,000 files (fewer with --limit) and for all of them (each run in
  its own child process; its ru_maxrss comes from os.wait4): flat means
  memory does not grow with the folder;
- training throughput and wall time per epoch, from the shipped model's
  history.json and checkpoint metadata (written by training);
- UI cold start: `python -m serve.app` started in a subprocess, timed until a
  gradio_client `/check` call with a photo returns.

Every measurement runs in a fresh child process (`--child ...`), so one
backend's threads and imports never affect another's numbers. The image files
are read once before timing, so every run finds them in the page cache.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: python bench/bench.py

from data.flags import positive_int  # noqa: E402

IMAGES = ROOT.parent / "shared" / "data" / "ham10000" / "images"
SMALL = 1000  # the smaller folder whose peak RSS is compared with the whole one's
RESULTS = ROOT / "bench" / "results.md"
MEASURED_BACKENDS = ("torch", "onnx")
NAMES = {"torch": "PyTorch", "onnx": "ONNX Runtime"}


# ---------------------------------------------------------------- child processes

def child_latency(args: dict) -> dict:
    import numpy as np

    t0 = time.perf_counter()
    from data.images import read_image
    from model.predictor import Predictor

    predictor = Predictor(args["checkpoint"], backend=args["backend"])
    load_s = time.perf_counter() - t0
    files = [Path(f) for f in args["files"]]
    prepared = [predictor.prepare(read_image(f)) for f in files]
    for p in prepared[:10]:  # warm-up
        predictor.classify([p])

    def timed(fn, items) -> list[float]:
        out = []
        for item in items:
            start = time.perf_counter()
            fn(item)
            out.append((time.perf_counter() - start) * 1e3)
        return out

    model_ms = timed(lambda p: predictor.classify([p]), prepared)
    file_ms = timed(lambda f: predictor.classify([predictor.prepare(read_image(f))]), files)
    batch = 32
    batches = [prepared[i:i + batch] for i in range(0, len(prepared) - batch + 1, batch)] or [prepared]
    predictor.classify(batches[0])
    start = time.perf_counter()
    done = 0
    while time.perf_counter() - start < 5 or done < 256:
        for b in batches:
            predictor.classify(b)
            done += len(b)
    batch_ips = done / (time.perf_counter() - start)

    def pct(values):
        return float(np.percentile(values, 50)), float(np.percentile(values, 95))

    return {"backend": predictor.backend, "load_s": load_s, "model_ms": pct(model_ms), "file_ms": pct(file_ms),
            "batch32_ips": batch_ips, "n": len(files)}


def child_batch(args: dict) -> dict:
    t0 = time.perf_counter()
    from serve import batch

    threads = args.get("threads", batch.NETWORK_THREADS)
    predictor = batch.make_predictor(args["checkpoint"], args["backend"], threads)
    load_s = time.perf_counter() - t0
    start = time.perf_counter()
    scored, errors = batch.score_folder(predictor, Path(args["folder"]), Path(args["out"]), progress=False)
    seconds = time.perf_counter() - start
    return {"backend": predictor.backend, "scored": scored, "errors": errors, "seconds": seconds,
            "images_per_s": (scored + errors) / seconds, "load_s": load_s, "workers": batch.WORKERS,
            "batch_size": batch.BATCH_SIZE, "network_threads": threads}


def child_ceiling(args: dict) -> dict:
    from serve import batch

    predictor = batch.make_predictor(args["checkpoint"], "onnx" if args["onnx"] else "torch")
    paths = list(batch.find_images(Path(args["folder"])))
    start = time.perf_counter()
    count = errors = 0
    for _, item in predictor.prepare_files(paths, workers=batch.WORKERS, ahead=2 * batch.BATCH_SIZE):
        count += 1
        errors += isinstance(item, str)
    seconds = time.perf_counter() - start
    return {"files": count, "errors": errors, "seconds": seconds, "images_per_s": count / seconds,
            "workers": batch.WORKERS}


CHILDREN = {"latency": child_latency, "batch": child_batch, "ceiling": child_ceiling}


def run_child(kind: str, args: dict) -> tuple[dict, int]:
    """Run a measurement in a fresh process; returns (its result, its peak RSS in bytes)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(args, f)
    errors = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", kind, f.name],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, text=True)
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, unlike RUSAGE_CHILDREN
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        errors.seek(0)
        raise RuntimeError(f"child {kind} {args.get('backend', '')} failed ({proc.returncode}):\n"
                           f"{errors.read()[-3000:].decode(errors='replace')}")
    result = json.loads([line for line in out.splitlines() if line.startswith("RESULT ")][-1][7:])
    return result, usage.ru_maxrss * 1024  # Linux reports kilobytes


# ---------------------------------------------------------------- the parent

def machine() -> dict:
    info = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    versions = {}
    for package in ("torch", "onnxruntime", "numpy", "opencv-python-headless", "gradio"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "-"
    return {"cpu": info.get("model name", platform.processor() or "unknown"), "mhz": info.get("cpu MHz", "?"),
            "cache": info.get("cache size", "?"), "cores": os.cpu_count(), "usable": len(os.sched_getaffinity(0)),
            "mem_gib": int(mem) / 2**20, "kernel": platform.release(), "python": platform.python_version(),
            "versions": versions}


def other_load() -> list[str]:
    """Other heavy jobs (a training run) that would skew the numbers."""
    done = subprocess.run(["pgrep", "-af", "training.train"], capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if "pgrep" not in line]


def warm_page_cache(paths: list[Path]) -> None:
    for path in paths:
        path.read_bytes()


def folder_of(paths: list[Path], all_paths: list[Path], scratch: Path, name: str) -> Path:
    """The image folder itself when all files are wanted, else a folder of symlinks to the first N."""
    if len(paths) == len(all_paths):
        return IMAGES
    folder = scratch / name
    folder.mkdir()
    for path in paths:
        (folder / path.name).symlink_to(path)
    return folder


def training_numbers(weights: Path, meta: dict) -> dict:
    for history_path in (weights / "history.json", ROOT / "runs" / "spotcheck" / "history.json"):
        if history_path.is_file():
            break
    else:
        return {}
    history = json.loads(history_path.read_text())
    rates = sorted(e["train_images_per_s"] for e in history if "train_images_per_s" in e)
    flags = meta.get("flags", {})
    epochs = len(history)
    minutes = meta.get("train_minutes")
    return {"source": str(history_path.relative_to(ROOT)), "epochs": epochs,
            "median_ips": rates[len(rates) // 2] if rates else None, "min_ips": rates[0] if rates else None,
            "max_ips": rates[-1] if rates else None, "draws_per_epoch": flags.get("draws_per_epoch"),
            "train_minutes": minutes, "wall_per_epoch_s": minutes * 60 / epochs if minutes and epochs else None,
            "threads": flags.get("threads"), "batch_size": flags.get("batch_size"), "image_size": flags.get("image_size")}


def free_port() -> int:
    """A local port no program listens on now (the tests start their apps on one too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ui_cold_start(backend: str, photo: Path, checkpoint: Path, timeout: float = 180) -> dict:
    from gradio_client import Client, handle_file

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "serve.app", "--port", str(port), "--backend", backend,
                             "--checkpoint", str(checkpoint)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the app exited ({proc.returncode}): {log.read()[-2000:].decode(errors='replace')}")
            if time.perf_counter() - start > timeout:
                raise RuntimeError("the app did not start in time")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        listening = time.perf_counter() - start
        while True:
            try:
                client = Client(url, verbose=False, analytics_enabled=False)
                break
            except Exception:
                if time.perf_counter() - start > timeout:
                    raise
                time.sleep(0.1)
        copy = Path(tempfile.mkdtemp()) / photo.name  # the app deletes what it was given; give it a copy
        shutil.copy(photo, copy)
        summary = client.predict(handle_file(str(copy)), api_name="/check")[0]
        answered = time.perf_counter() - start
        big = phone_photo(copy.parent)
        big_seconds = []
        for _ in range(3):  # upload, answer and the heatmap's download, as a page would get them
            shutil.copy(big, copy)
            t0 = time.perf_counter()
            client.predict(handle_file(str(copy)), api_name="/check")
            big_seconds.append(time.perf_counter() - t0)
        big_mb = big.stat().st_size / 1e6
        shutil.rmtree(copy.parent, ignore_errors=True)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"listening_s": listening, "answer_s": answered, "summary": summary.splitlines()[0] if summary else "",
            "phone_photo_s": sorted(big_seconds)[1], "phone_photo_mb": big_mb}


def phone_photo(folder: Path) -> Path:
    """A 12-megapixel (4000x3000) JPEG like a phone's: textured skin, one red spot, quality 92."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    image = np.clip(rng.normal((160, 180, 225), 9, (3000, 4000, 3)), 0, 255).astype(np.uint8)  # BGR skin
    cv2.circle(image, (2100, 1400), 60, (40, 30, 190), -1, cv2.LINE_AA)
    path = folder / "phone_12mp.jpg"
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/bench.py", description=__doc__,  # a script, not a module
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=positive_int, default=None, help="score only the first N images (default: all)")
    parser.add_argument("--latency-images", type=positive_int, default=200, help="images for the latency percentiles")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--skip-ui", action="store_true", help="leave out the app's cold start")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the table is written (default: bench/results.md)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "ARGS_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, path = args.child
        result = CHILDREN[kind](json.loads(Path(path).read_text()))
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    from model.checkpoint import DEFAULT_CHECKPOINT
    from model.export import onnx_paths
    from model.predictor import choose_backend, onnx_problem
    from serve import batch

    checkpoint = (args.checkpoint or DEFAULT_CHECKPOINT).resolve()
    onnx_path, json_path = onnx_paths(checkpoint)
    if onnx_problem(checkpoint):
        print(f"error: {onnx_problem(checkpoint)}", file=sys.stderr)
        return 2
    sidecar = json.loads(json_path.read_text())
    meta, size = sidecar["meta"], int(sidecar["preprocess"]["size"])
    started = datetime.now(timezone.utc)
    busy_before = other_load()
    if busy_before:
        print("warning: a training job is running; the numbers will be low:\n  " + "\n  ".join(busy_before),
              file=sys.stderr)
    box = machine()
    t_start = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {message}", file=sys.stderr, flush=True)

    all_paths = list(batch.find_images(IMAGES))
    paths = all_paths[: args.limit] if args.limit else all_paths
    say(f"reading {len(all_paths)} files once (page cache)")
    warm_page_cache(all_paths)
    scratch = Path(tempfile.mkdtemp(prefix="spotcheck-bench-"))
    results: dict = {"latency": {}, "batch": {}, "rss": {}, "ui": {}}
    try:
        step = max(1, len(paths) // args.latency_images)
        sample = [str(p) for p in paths[::step][: args.latency_images]]
        for backend in MEASURED_BACKENDS:
            say(f"latency, {backend}")
            results["latency"][backend], _ = run_child("latency", {"checkpoint": str(checkpoint), "backend": backend,
                                                                   "files": sample})
        folder = folder_of(paths, all_paths, scratch, "all")
        first = paths[:SMALL]  # all of them for a quick run (--limit under SMALL)
        small = folder_of(first, all_paths, scratch, "first")
        say(f"decode-only ceiling on {len(paths)} files")
        results["ceiling"], _ = run_child("ceiling", {"checkpoint": str(checkpoint), "folder": str(folder),
                                                      "onnx": True})
        for backend in MEASURED_BACKENDS:
            for name, where, count in (("small", small, len(first)), ("all", folder, len(paths))):
                say(f"batch scoring, {backend}, {count} files")
                result, rss = run_child("batch", {"checkpoint": str(checkpoint), "backend": backend,
                                                  "folder": str(where), "out": str(scratch / f"{backend}-{name}.csv")})
                results["rss"][(backend, name)] = rss
                if name == "all":
                    results["batch"][backend] = result
        say(f"batch scoring, torch with the network on its default threads, {len(paths)} files")
        results["batch_old"], _ = run_child("batch", {"checkpoint": str(checkpoint), "backend": "torch", "threads": None,
                                                      "folder": str(folder), "out": str(scratch / "old.csv")})
        if not args.skip_ui:
            photo = Path(sample[0])
            for backend in ("auto", "torch"):
                say(f"UI cold start, {backend}")
                results["ui"][backend] = ui_cold_start(backend, photo, checkpoint)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    busy_after = other_load()

    # ---------------------------------------------------------------- the table
    parameters, flops = meta["parameters"], meta["flops"]  # as training counted them (an ensemble: all members)
    train = training_numbers(checkpoint.parent, meta)
    lat, bat, cei, rss = results["latency"], results["batch"], results["ceiling"], results["rss"]
    n = len(paths)
    b0 = next(iter(bat.values()))
    rows = [
        ("Model parameters", f"{parameters:,}"),
        (f"FLOPs per image ({size}x{size})", f"{flops / 1e6:,.0f} M ({flops / 2e6:,.0f} M MACs)"),
        ("File sizes", f".pt {mib(checkpoint.stat().st_size)}, .onnx {mib(onnx_path.stat().st_size)}, "
                       f".json {json_path.stat().st_size / 1024:,.0f} KiB"),
    ]
    for backend in MEASURED_BACKENDS:
        r = lat[backend]
        rows.append((f"{NAMES[backend]}: import + load model", f"{r['load_s']:.2f} s"))
    for backend in MEASURED_BACKENDS:
        r = lat[backend]
        rows.append((f"{NAMES[backend]}: single image, model only (`classify`), p50 / p95",
                     f"{r['model_ms'][0]:.2f} / {r['model_ms'][1]:.2f} ms"))
    for backend in MEASURED_BACKENDS:
        r = lat[backend]
        rows.append((f"{NAMES[backend]}: single image, file to answer (read + prepare + classify), p50 / p95",
                     f"{r['file_ms'][0]:.2f} / {r['file_ms'][1]:.2f} ms"))
    for backend in MEASURED_BACKENDS:
        rows.append((f"{NAMES[backend]}: model only, batches of 32", f"{lat[backend]['batch32_ips']:,.0f} images/s"))
    rows.append((f"Ceiling: read + decode + frame + resize only ({cei['workers']} threads, {n:,} files)",
                 f"{cei['images_per_s']:,.0f} images/s"))
    for backend in MEASURED_BACKENDS:
        r = bat[backend]
        rows.append((f"{NAMES[backend]}: batch scoring `score_folder`, {n:,} files",
                     f"{r['images_per_s']:,.0f} images/s ({r['seconds']:.1f} s; "
                     f"{r['images_per_s'] / cei['images_per_s']:.0%} of the ceiling)"))
    old = results["batch_old"]
    rows.append((f"PyTorch: the same with the network on {os.cpu_count()} threads",
                 f"{old['images_per_s']:,.0f} images/s ({old['images_per_s'] / cei['images_per_s']:.0%} of the ceiling)"))
    for backend in MEASURED_BACKENDS:
        rows.append((f"{NAMES[backend]}: peak RSS of batch scoring, {min(n, SMALL):,} / {n:,} files",
                     f"{mib(rss[(backend, 'small')])} / {mib(rss[(backend, 'all')])}"))
    if train:
        rows.append((f"Training throughput (shipped model, {train['epochs']} epochs, {train['threads']} threads)",
                     f"{train['median_ips']:,.0f} images/s median (range {train['min_ips']:,.0f}-{train['max_ips']:,.0f})"))
        if train["wall_per_epoch_s"]:
            pure = train["draws_per_epoch"] / train["median_ips"] if train["draws_per_epoch"] else None
            rows.append(("Training wall time per epoch (incl. validation)",
                         f"{train['wall_per_epoch_s']:.0f} s ({train['train_minutes']:.1f} min for {train['epochs']} "
                         f"epochs" + (f"; {pure:.0f} s of it training {train['draws_per_epoch']:,} images)" if pure else ")")))
    for backend, r in results["ui"].items():
        label = f"auto = {NAMES[choose_backend(checkpoint)]}" if backend == "auto" else NAMES[backend]
        rows.append((f"UI cold start to first answer ({label})",
                     f"{r['answer_s']:.1f} s (port open after {r['listening_s']:.1f} s)"))
        rows.append((f"12-megapixel photo ({r['phone_photo_mb']:.1f} MB JPEG), upload to answer ({label})",
                     f"{r['phone_photo_s']:.2f} s (median of 3)"))

    cpu = (f"{box['cpu']}, {box['cores']} cores ({box['usable']} usable), {box['mhz']} MHz, {box['cache']} cache, "
           f"{box['mem_gib']:.0f} GiB RAM; Linux {box['kernel']}, Python {box['python']}; "
           + ", ".join(f"{k} {v}" for k, v in box["versions"].items()))
    width = max(len(r[0]) for r in rows)
    table = [f"| {'Measure'.ljust(width)} | Result |", f"| {'-' * width} | --- |"]
    table += [f"| {a.ljust(width)} | {b} |" for a, b in rows]
    settings = (f"Batch scoring as `python -m serve.batch` runs it: {b0['workers']} decoding threads, batches of "
                f"{b0['batch_size']}, {b0['network_threads']} network thread(s); files in the page cache. "
                f"Latency over {lat['torch']['n']} images spread over the folder, after 10 warm-up calls; "
                "default thread settings (`Predictor()`).")
    faster_single = min(MEASURED_BACKENDS, key=lambda b: lat[b]["model_ms"][0])
    faster_batch = min(MEASURED_BACKENDS, key=lambda b: -lat[b]["batch32_ips"])
    verdict = (f"Faster backend here: {NAMES[faster_single]} for single images, {NAMES[faster_batch]} for batches; "
               f"`backend=\"auto\"` picks {NAMES[choose_backend(checkpoint)]} for this checkpoint.")
    load_note = ("" if not (busy_before or busy_after) else
                 "\n**Warning:** a training job was running during this run, so the numbers are low.\n")
    text = "\n".join([
        "# SpotCheck benchmark", "",
        f"Run {started:%Y-%m-%d %H:%M} UTC with `python bench/bench.py"
        + (f" --limit {args.limit}" if args.limit else "") + f"` on {checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint}.",
        "", f"Machine: {cpu}.", load_note, *table, "", settings, "", verdict, "",
    ])
    print(text)
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
