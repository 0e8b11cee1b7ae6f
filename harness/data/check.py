"""`eabench data check`: what was found per split, beside the official sizes, and a verdict."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness.data.frame_cache_build import check_workers
from harness.data.lookup import VideoIndex, search_dirs
from harness.data.readers import OFFICIAL_SIZES, SPLITS, read_split, reader_name
from harness.data.records import MIN_READABLE_VIDEOS, too_few_readable
from harness.errors import DataError

__all__ = ["VERDICTS", "check_dataset", "probe_video"]

VERDICTS = {
    "ok": "every listed video is present and readable; split sizes match the official ones "
          "(where known)",
    "usable": "runs will work; missing or unreadable videos are skipped (see the counts)",
    "unusable": "a required split could not be read or has fewer readable videos than a run "
                f"needs (train >= {MIN_READABLE_VIDEOS['train']}, test >= {MIN_READABLE_VIDEOS['test']})",
}


def probe_video(path: Path) -> str | None:
    """None if the file opens and yields a first frame, else the reason."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return "no video stream"
            for _ in c.decode(video=0):
                return None
            return "no decodable frame"
    except Exception as exc:  # noqa: BLE001 - any decoder failure means unreadable, whatever its type
        return f"{type(exc).__name__}: {exc}"


def check_dataset(dataset: str, root: str | Path, videos: str | Path | None = None, *,
                  probe: bool = True, workers: int = 4) -> dict[str, Any]:
    from harness.presets import get_preset

    check_workers(workers)
    preset = get_preset(dataset)
    reader = reader_name(dataset)
    root = Path(root)
    required = [preset.train_split, preset.test_split]
    result: dict[str, Any] = {"dataset": dataset, "root": str(root), "splits": {}}
    if not root.is_dir():
        result.update(verdict="unusable", searched="",
                      reasons=[f"data root {root} is not a folder"])
        return result
    index = VideoIndex(search_dirs(root, Path(videos) if videos else None))
    result["searched"] = index.describe()
    result["files_indexed"] = sum(len(v) for v in index.by_name.values())
    official = {} if dataset == "synthetic" else OFFICIAL_SIZES.get(reader, {})
    reasons: list[str] = []
    unusable = False
    for split, files in SPLITS[reader].items():
        if split not in required and not (root / files[0]).is_file():
            continue  # optional split without annotation files
        entry: dict[str, Any] = {"official": official.get(split), "required": split in required}
        try:
            res = read_split(dataset, root, split, videos, index=index)
        except DataError as exc:
            entry.update(error=str(exc), listed=0, present=0, missing=0, unreadable=0, captions=0)
            result["splits"][split] = entry
            if split in required:
                unusable = True
                reasons.append(f"{split}: {exc}")
            continue
        recs = res.records
        paths = [r.path for r in recs if r.path is not None]
        bad: dict[str, str] = {}
        if probe and paths:
            with ThreadPoolExecutor(workers) as ex:
                for r, why in zip([r for r in recs if r.path is not None],
                                  ex.map(probe_video, paths)):
                    if why is not None:
                        bad[r.video_id] = why
        missing = [r.video_id for r in recs if r.path is None]
        entry.update(listed=len(recs), present=len(paths), missing=len(missing),
                     unreadable=len(bad), readable=len(paths) - len(bad) if probe else None,
                     captions=sum(len(r.texts) for r in recs), notes=res.notes,
                     missing_examples=missing[:10],
                     unreadable_examples=dict(list(bad.items())[:10]))
        result["splits"][split] = entry
        usable_n = len(paths) - len(bad)
        if usable_n == 0:
            if split in required:
                unusable = True
            reasons.append(f"{split}: no readable video among {len(recs)} listed; searched "
                           f"(recursively): {index.describe()}; pass --videos DIR")
            continue
        # the same minimums as training (harness.train.inputs.prepare_inputs)
        role = {preset.train_split: "train", preset.test_split: "test"}.get(split)
        short = too_few_readable(role, usable_n) if role else None
        if short:
            unusable = True
            reasons.append(f"{split}: {short}")
        if missing:
            reasons.append(f"{split}: {len(missing)} listed video(s) missing, e.g. {missing[0]!r}")
        if bad:
            vid, why = next(iter(bad.items()))
            reasons.append(f"{split}: {len(bad)} unreadable video(s), e.g. {vid!r} ({why})")
        if entry["official"] is not None and len(recs) != entry["official"]:
            reasons.append(f"{split}: {len(recs)} videos listed, the official split has "
                           f"{entry['official']}")
    result["verdict"] = "unusable" if unusable else ("usable" if reasons else "ok")
    result["reasons"] = reasons
    result["meaning"] = VERDICTS[result["verdict"]]
    return result


def render_check(result: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    # names, paths and reasons come from data files: escaped, never read as Rich markup
    table = Table(title=escape(f"{result['dataset']} in {result['root']}"))
    for col in ("split", "listed", "present", "missing", "unreadable", "captions", "official"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split, e in result["splits"].items():
        if "error" in e:
            table.add_row(escape(split), "[red]error[/red]", "", "", "", "", str(e["official"] or "-"))
            continue
        table.add_row(escape(split), str(e["listed"]), str(e["present"]), str(e["missing"]),
                      str(e["unreadable"]), str(e["captions"]),
                      "-" if e["official"] is None else str(e["official"]))
    console.print(table)
    console.print(f"videos searched under: {escape(result.get('searched', ''))}", highlight=False)
    for split, e in result["splits"].items():
        for note in e.get("notes", []):
            console.print(f"note ({escape(split)}): {escape(note)}", highlight=False)
        if "error" in e:
            console.print(f"[red]error ({escape(split)})[/red]: {escape(e['error'])}", highlight=False)
    for r in result.get("reasons", []):
        console.print(f"- {escape(r)}", highlight=False)
    colour = {"ok": "green", "usable": "yellow", "unusable": "red"}[result["verdict"]]
    console.print(f"verdict: [bold {colour}]{result['verdict'].upper()}[/bold {colour}] — "
                  f"{VERDICTS[result['verdict']]}", highlight=False)
