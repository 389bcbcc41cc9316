"""Which clips the explanations draw: a run's clips, or audio files named on the command line."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class ClipRef:
    """A clip to draw: its file, machine type and id, and label (None when not known)."""

    path: str
    machine_type: str = "clip"
    machine_id: str = ""
    label: int | None = None
    split: str = ""

    @property
    def label_name(self) -> str:
        return {0: "normal", 1: "anomalous"}.get(self.label, "unlabelled")

    @property
    def title(self) -> str:
        bits = [self.machine_type, self.machine_id, self.label_name, Path(self.path).name]
        return " / ".join(b for b in bits if b)


def clips_from_run(run_dir: str | Path) -> list[ClipRef]:
    """The clips of the runs at and below ``run_dir`` (a reproduce directory's cells), each path once."""
    from humwatch.rundir import RunDir

    seen: dict[str, ClipRef] = {}
    for rd in RunDir.find(run_dir):
        for c in rd.clips():
            seen.setdefault(c.path, ClipRef(c.path, c.machine_type, c.machine_id, c.label, c.split))
    return list(seen.values())


def clip_from_path(path: str | Path) -> ClipRef:
    """Machine type, id and label guessed from a MIMII / DCASE / normal-abnormal folder path."""
    p = Path(path)
    parts = [s.lower() for s in p.parts]
    name = p.stem.lower()
    label = None
    if "abnormal" in parts[:-1] or "anomaly" in parts[:-1] or "anomalous" in parts[:-1] or "_anomaly_" in f"_{name}_":
        label = 1
    elif "normal" in parts[:-1] or "_normal_" in f"_{name}_":
        label = 0
    mid = next((s for s in reversed(p.parts[:-1]) if s.lower().startswith("id_")), "")
    if not mid and name.startswith("section_"):
        mid = "_".join(p.stem.split("_")[:2])
    mtype = "clip"
    if len(p.parts) >= 4 and mid and p.parts[-3] == mid:  # <machine>/id_XX/<label>/file.wav
        mtype = p.parts[-4]
    elif len(p.parts) >= 3 and p.parts[-2].lower() in ("train", "test", "normal", "abnormal", "anomaly", "anomalous"):
        mtype = p.parts[-3]
    return ClipRef(str(p), mtype, mid, label)


def pick_examples(clips: Sequence[ClipRef], seed: int = 0, prefer_split: str = "test") -> dict[str, list[ClipRef]]:
    """Per machine type: one normal and one anomalous clip (from ``prefer_split`` where it has them),
    of the same machine id where one has both, so the pair differs by the fault and not the product."""
    rng = random.Random(seed)
    out: dict[str, list[ClipRef]] = {}
    for mtype in sorted({c.machine_type for c in clips}):
        of_type = [c for c in clips if c.machine_type == mtype]
        both = sorted({c.machine_id for c in of_type if c.label == 0} & {c.machine_id for c in of_type if c.label == 1})
        if both:
            mid = rng.choice(both)
            of_type = [c for c in of_type if c.machine_id == mid]
        row = []
        for label in (0, 1):
            cands = [c for c in of_type if c.label == label]
            pref = [c for c in cands if c.split == prefer_split] or cands
            if pref:
                row.append(rng.choice(sorted(pref, key=lambda c: c.path)))
        if row:
            out[mtype] = row
    return out


def pick_clips(clips: Sequence[ClipRef], n: int, seed: int = 0) -> list[ClipRef]:
    """Up to ``n`` clips spread evenly over machine types and labels (test split first)."""
    rng = random.Random(seed)
    groups: dict[tuple, list[ClipRef]] = {}
    for c in sorted(clips, key=lambda c: (c.split != "test", c.path)):
        groups.setdefault((c.machine_type, c.label), []).append(c)
    for g in groups.values():
        test = [c for c in g if c.split == "test"]
        rest = [c for c in g if c.split != "test"]
        rng.shuffle(test)
        rng.shuffle(rest)
        g[:] = test + rest
    out: list[ClipRef] = []
    keys = sorted(groups, key=str)
    while len(out) < n and any(groups[k] for k in keys):
        for k in keys:
            if groups[k] and len(out) < n:
                out.append(groups[k].pop(0))
    return out
