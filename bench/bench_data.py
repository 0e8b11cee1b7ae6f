"""Data-path benchmark: decode+cache throughput and cache read throughput.

    python bench/bench_data.py [--videos 40] [--seconds 20] [--workers 1 2] [--write-doc]

1. Writes ``--videos`` MSR-VTT-layout videos of ``--seconds`` s at 320x240, 30 fps (H.264,
   textured moving content) into a temporary folder.
2. Builds the frame cache with the MSR-VTT settings (T=12, 1 fps, uniform, 224 px) once per
   worker count and reports videos/s, cached frames/s and decoded source frames/s.
3. Reads random batches of 128 videos x 12 frames from caches at 224 px and 32 px:
   ``batch_uint8`` (what crosses to the GPU) and ``batch`` (normalised float32 on the CPU, or on
   ``--device`` when given), frames/s = 128*12 / seconds per batch (median of ``--repeats``).
``--write-doc`` replaces the "Data" section of docs/PERFORMANCE.md with the results.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.data import read_dataset
from harness.data.frame_cache import FrameCache
from harness.data.frames import FrameSettings


def write_bench_video(path: Path, seconds: int, rng: np.random.Generator, w: int = 320,
                      h: int = 240, fps: int = 30) -> None:
    import av

    texture = rng.integers(0, 256, size=(h, w * 2, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(seconds * fps):
            img = texture[:, (i * 3) % w: (i * 3) % w + w].copy()
            img[..., 0] = ((xx + yy + 4 * i) % 256).astype(np.uint8)  # moving gradient
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)


def make_dataset(root: Path, n: int, seconds: int) -> None:
    rng = np.random.default_rng(0)
    (root / "videos").mkdir(parents=True)
    ids = [f"video{i}" for i in range(n)]
    for vid in ids:
        write_bench_video(root / "videos" / f"{vid}.mp4", seconds, rng)
    (root / "MSRVTT_train.9k.csv").write_text("video_id\n" + "".join(f"{v}\n" for v in ids))
    (root / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\n")
    sents = [{"video_id": v, "caption": "a bench video", "sen_id": i} for i, v in enumerate(ids)]
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": [], "sentences": sents}))


def bench_build(records, settings, cache_root: Path, workers: int, seconds: int) -> dict:
    t0 = time.perf_counter()
    rep = FrameCache.build(records, settings, cache_root, workers, dataset="msrvtt",
                           progress=False)
    dt = time.perf_counter() - t0
    n = rep.done
    return {"workers": workers, "videos": n, "seconds": round(dt, 2),
            "videos_per_s": round(n / dt, 2), "cached_frames_per_s": round(rep.frames / dt, 1),
            "decoded_frames_per_s": round(n * seconds * 30 / dt, 0),
            "per_worker_videos_per_s": round(n / dt / workers, 2), "failed": len(rep.failed)}


def fabricate_cache(cache_root: Path, settings: FrameSettings, n: int) -> FrameCache:
    """A cache of ``n`` videos of random frames in the real on-disk format (no decoder needed:
    lets the read path be timed on a machine without PyAV)."""
    from harness.data.frame_cache_layout import FAILED, INDEX, META, cache_dir
    from harness.data.frame_cache_layout import frame_file as _file_for

    out = cache_dir(cache_root, "msrvtt", settings)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    (out / META).write_text(json.dumps({"key": settings.key(), "dataset": "msrvtt"}))
    (out / FAILED).write_text("")
    rng = np.random.default_rng(0)
    s, t = settings.image_size, settings.max_frames
    block = rng.integers(0, 256, size=(t, 3, s, s), dtype=np.uint8)
    with open(out / INDEX, "w") as index:
        for i in range(n):
            rel = _file_for(f"video{i}")
            dest = out / "frames" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with dest.open("wb") as f:
                np.save(f, np.roll(block, i, axis=0))
                size = f.tell()
            index.write(json.dumps({"id": f"video{i}", "file": rel, "n": t,
                                    "times": list(range(t)), "window": [None, None], "src": "",
                                    "bytes": size, "offset": size - block.nbytes}) + "\n")
    return FrameCache.open(cache_root, settings, "msrvtt")


def bench_read(cache: FrameCache, ids: list[str], batch: int, repeats: int, device: str | None
               ) -> dict:
    import torch

    rng = random.Random(0)
    t_frames = cache.settings.max_frames
    out = {}
    reuse = None
    for name in ("batch_uint8", "batch_uint8(out=reused)", "batch"):
        times = []
        for r in range(repeats + 1):
            pick = [rng.choice(ids) for _ in range(batch)]
            t0 = time.perf_counter()
            if name == "batch_uint8":
                x, _ = cache.batch_uint8(pick)
                if device:
                    x = x.to(device)
            elif name == "batch_uint8(out=reused)":
                if reuse is None:
                    reuse = cache.batch_uint8(pick, pin_memory=bool(device and "cuda" in device))[0]
                x, _ = cache.batch_uint8(pick, out=reuse)
                if device:
                    x = x.to(device)
            else:
                x, _ = cache.batch(pick, device=device)
            if device and "cuda" in device:
                torch.cuda.synchronize()
            if r:  # first round warms caches and allocators
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        out[name] = {"ms_per_batch": round(med * 1000, 1),
                     "frames_per_s": round(batch * t_frames / med, 0),
                     "MB_per_s": round(x.element_size() * x.numel() / med / 1e6, 0)}
    return out


def _build_table(build: list[dict]) -> list[str]:
    lines = [("| workers | videos | wall s | videos/s | videos/s per worker | cached frames/s "
              "| decoded source frames/s |"), "|---|---|---|---|---|---|---|"]
    for b in build:
        lines.append(f"| {b['workers']} | {b['videos']} | {b['seconds']} | {b['videos_per_s']} | "
                     f"{b['per_worker_videos_per_s']} | {b['cached_frames_per_s']} | "
                     f"{b['decoded_frames_per_s']:.0f} |")
    return lines


def _read_table(read: list[dict]) -> list[str]:
    lines = ["| image size | target | path | ms/batch | frames/s | MB/s |",
             "|---|---|---|---|---|---|"]
    for r in read:
        for path, v in r["result"].items():
            lines.append(f"| {r['image_size']} | {r['device'] or 'cpu'} | `{path}` | "
                         f"{v['ms_per_batch']} | {v['frames_per_s']:.0f} | {v['MB_per_s']:.0f} |")
    return lines


def render(res: dict, command: str, extra: list[dict]) -> str:
    """The "Data" section: this run, then runs recorded elsewhere (``--include``)."""
    lines = ["## Data", "",
             ("Decode + cache build: the MSR-VTT preset (T=12, 1 fps, uniform slice, 224 px) on "
             "generated 320x240, 30 fps H.264 videos with moving textured content. Cache read: "
             f"random batches of {res['batch']} videos x 12 frames from a warm page cache; "
             "`batch_uint8` allocates a new tensor per call, `batch_uint8(out=reused)` fills one "
             "buffer (what a training loop should do), `batch` returns CLIP-normalised float32 "
             "(normalised on the GPU when the target is cuda). frames/s = batch x 12 / time per "
             "batch (median)."), "",
             f"### This machine: {res['machine']} ({res['date']})", "",
             f"Command: `{command}`" + (f" — {res['note']}" if res.get("note") else ""), "",
             f"Decode + cache build ({res['videos']} videos x {res['seconds']} s):", "",
             *_build_table(res["build"]), "", "Cache read:", "", *_read_table(res["read"]), ""]
    for x in extra:
        lines += [f"### {x['machine']} ({x.get('date', '')})", "",
                  f"Command: `{x['command']}`" + (f" — {x['note']}" if x.get("note") else ""), ""]
        if x.get("build"):
            lines += [f"Decode + cache build ({x['videos']} videos x {x['seconds']} s):", "",
                      *_build_table(x["build"]), ""]
        if x.get("read"):
            lines += ["Cache read:", "", *_read_table(x["read"]), ""]
    lines += [res["verdict"], ""]
    return "\n".join(lines)


def shown_command(argv: list[str]) -> str:
    """The command for the docs, without the bookkeeping options (--include/--note/--json)."""
    keep, skip = [], False
    for a in argv:
        if a in ("--include", "--note", "--json"):
            skip = True
            continue
        if skip and not a.startswith("--"):
            continue
        skip = False
        keep.append(a)
    return " ".join(["python bench/bench_data.py", *keep])


def _best(read: list[dict], size: int, device: str | None, paths: tuple[str, ...]) -> float:
    vals = [v["frames_per_s"] for r in read if r["image_size"] == size and r["device"] == device
            for k, v in r["result"].items() if k in paths]
    return max(vals) if vals else 0.0


def verdict(res: dict, extra: list[dict]) -> str:
    u8 = ("batch_uint8", "batch_uint8(out=reused)")
    here = _best(res["read"], 224, None, u8)
    gpu = [(x["machine"], _best(x["read"], 224, "cuda", ("batch",)),
            _best(x["read"], 224, None, u8)) for x in extra if x.get("read")
           and any(r["device"] == "cuda" for r in x["read"])]
    parts = []
    if gpu:
        machine, to_gpu, gather = max(gpu, key=lambda g: g[1])
        ok = to_gpu >= 10_000
        parts.append(f"**Feeding >= 10k frames/s to a GPU at 224 px: {'yes' if ok else 'no'}.** "
                     f"On {machine}, `batch(ids, device='cuda')` (uint8 gather into a reused "
                     f"pinned buffer, one host-to-device copy, normalisation on the GPU) delivers "
                     f"{to_gpu:.0f} frames/s, and the uint8 gather alone {gather:.0f} frames/s.")
    parts.append(f"On this machine ({res['machine']}) the uint8 gather reaches {here:.0f} "
                 f"frames/s at 224 px ({'above' if here >= 10_000 else 'below'} 10k).")
    parts.append("What bounds it: a cached 224 px frame is 150,528 bytes and reading it is a "
                 "file read plus a memory copy, so the gather runs at memory/page-cache bandwidth "
                 "when the cache is hot and at disk bandwidth when cold (10k frames/s needs "
                 "1.5 GB/s: a local NVMe SSD, not a network disk). A new tensor per batch also pays "
                 "a page fault per 4 KB on first touch (the `batch_uint8` vs `out=reused` rows), "
                 "so the training loop reuses one pinned buffer. Normalising to float32 on the CPU "
                 "writes 4x the bytes and is the slowest path; with a GPU the uint8 batch crosses "
                 "PCIe (4x less traffic) and is normalised there. Decoding is a one-off cost: "
                 "H.264 decode is about one core per 2k source frames/s at 320x240, and workers "
                 "scale it until the cores are used.")
    return " ".join(parts)


def write_section(doc: Path, section: str) -> None:
    """Replace (or append) the '## Data' section, leaving other engineers' sections alone."""
    text = doc.read_text() if doc.exists() else "# Performance\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Data"), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        new = "\n".join(lines[:start] + section.rstrip("\n").splitlines() + [""] + lines[end:])
    doc.write_text(new.rstrip("\n") + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default=None, help="e.g. cuda: also time the copy + normalise")
    ap.add_argument("--write-doc", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--include", type=Path, nargs="*", default=[],
                    help="result JSON files (--json) of runs on other machines to list as well")
    ap.add_argument("--note", default="", help="a remark printed beside this run's command")
    ap.add_argument("--read-only", type=int, default=0, metavar="N",
                    help="skip decoding: time reads from a fabricated cache of N videos")
    args = ap.parse_args()
    import torch

    if args.read_only:
        read = []
        with tempfile.TemporaryDirectory() as tmp:
            for size in (224, 32):
                st = FrameSettings(max_frames=12, image_size=size)
                cache = fabricate_cache(Path(tmp) / f"c{size}", st, args.read_only)
                for dev in [None] + ([args.device] if args.device else []):
                    r = bench_read(cache, cache.video_ids, args.batch, args.repeats, dev)
                    read.append({"image_size": size, "device": dev, "result": r})
                    print(json.dumps(read[-1]))
        res = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch "
                          f"{torch.__version__}"
                          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
               "read": read, "date": time.strftime("%Y-%m-%d"),
               "command": "python bench/bench_data.py " + " ".join(sys.argv[1:])}
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        t0 = time.perf_counter()
        make_dataset(root, args.videos, args.seconds)
        print(f"wrote {args.videos} videos in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        records = read_dataset("msrvtt", root, "train9k")
        s224 = FrameSettings(max_frames=12, image_size=224)
        from harness.data.frames import decode_video

        decode_video(records[0].path, s224)  # warm-up: lazy imports, resize kernels
        build = []
        for w in args.workers:
            build.append(bench_build(records, s224, Path(tmp) / f"cache_w{w}", w, args.seconds))
            print(build[-1], file=sys.stderr)
        read = []
        s32 = FrameSettings(max_frames=12, image_size=32)
        FrameCache.build(records, s32, Path(tmp) / "cache32", 1, dataset="msrvtt", progress=False)
        caches = [(224, Path(tmp) / f"cache_w{args.workers[0]}", s224),
                  (32, Path(tmp) / "cache32", s32)]
        for size, croot, st in caches:
            cache = FrameCache.open(croot, st, "msrvtt")
            for dev in [None] + ([args.device] if args.device else []):
                r = bench_read(cache, cache.video_ids, args.batch, args.repeats, dev)
                read.append({"image_size": size, "device": dev, "result": r})
                print(read[-1], file=sys.stderr)
    command = shown_command(sys.argv[1:])
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch "
                      f"{torch.__version__}", "date": time.strftime("%Y-%m-%d"),
           "videos": args.videos, "seconds": args.seconds, "batch": args.batch,
           "build": build, "read": read, "verdict": verdict, "command": command,
           "note": args.note}
    extra = [json.loads(p.read_text()) for p in args.include]
    res["verdict"] = verdict(res, extra)
    section = render(res, command, extra)
    print(section)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    if args.write_doc:
        write_section(REPO / "docs" / "PERFORMANCE.md", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
