"""ser-batch (Ray Data) against ser-infer (one process) over the same clips, in one run on this machine.

    python benchmarks/batch_vs_infer.py BUNDLE [--clips 2000] [--actors 1,2] [--out FILE.json]

Writes `--clips` clips of speech-like audio (1-3 s, seeded; a third of them 44.1 kHz stereo FLAC, so reading
includes decoding and resampling) once, then times, each from a cold start as a user runs it:
- `ser-infer BUNDLE FILE... --json --batch-size 8` over the files in name order (a shell glob's), with the
  time to its first answer line;
- `ser-batch BUNDLE FOLDER --out NEW --json --actors N` for each N in `--actors` (Ray started for the job),
  with the time to its first rows from its summary;
- the same ser-batch command again over the finished output: the cost of a rerun that has nothing to do;
- both over one clip: the per-job start-up cost (ser-batch: listing, Ray, the bundle shipped, actors, model).
Both use the CPU backend on every core (ser-infer's default threads; each ser-batch actor as many threads as
Ray's CPUs for it). Reports files/s and audio-seconds/s over wall time (start-up included), and ratios to
ser-infer.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from ser.audio import SAMPLE_RATE
from ser.bench.environment import environment
from ser.bundle import Bundle
from ser.data.signals import synthetic_voice

SCRIPTS = Path(sys.executable).parent


def write_corpus(folder: Path, count: int, seed: int = 0) -> float:
    """`count` clips under `folder`; returns their total duration in seconds."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(count):
        seconds = float(rng.uniform(1.0, 3.0))
        total += seconds
        if i % 3 == 0:
            mono = synthetic_voice(int(seconds * 44_100), seed=i, rate=44_100)
            sf.write(folder / f"clip-{i:05d}.flac", np.stack([mono, 0.9 * mono], axis=1), 44_100)
        else:
            sf.write(folder / f"clip-{i:05d}.wav", synthetic_voice(int(seconds * SAMPLE_RATE), seed=i), SAMPLE_RATE)
    return total


def run_infer(bundle: str, files: list[Path]) -> dict:
    started = time.monotonic()
    command = [SCRIPTS / "ser-infer", bundle, *files, "--json", "--batch-size", "8", "--backend", "onnxruntime-cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first, answered, audio = None, 0, 0.0
    for line in process.stdout:
        first = first or time.monotonic() - started
        record = json.loads(line)
        answered += "error" not in record
        audio += record.get("duration_s", 0.0)
    process.wait()
    wall = time.monotonic() - started
    return {"wall_s": wall, "first_rows_s": first, "answered": answered, "audio_s": audio}


def run_batch(bundle: str, folder: Path, out: Path, actors: int) -> dict:
    started = time.monotonic()
    command = [SCRIPTS / "ser-batch", bundle, folder, "--out", out, "--json", "--actors", str(actors),
               "--backend", "onnxruntime-cpu"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"ser-batch failed ({result.returncode}): {result.stderr[-2000:]}")
    summary = json.loads(result.stdout.splitlines()[-1])
    return {"wall_s": wall, "first_rows_s": summary["first_rows_s"], "answered": summary["scored"],
            "audio_s": summary["audio_s"], "skipped": summary["skipped"],
            "cpus_per_actor": summary["cpus_per_actor"], "job_wall_s": summary["wall_s"]}  # fmt: skip


def rates(run: dict, clips: int) -> dict:
    return {**run, "files_per_s": clips / run["wall_s"], "audio_s_per_s": run["audio_s"] / run["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--actors", default="1,2")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    bundle = Bundle.load(args.bundle)
    work = Path(tempfile.mkdtemp(prefix="ser-batch-bench-"))
    try:
        folder = work / "clips"
        folder.mkdir()
        audio_s = write_corpus(folder, args.clips)
        files = sorted(folder.iterdir())
        infer = rates(run_infer(args.bundle, files), args.clips)
        print(f"ser-infer: {infer['files_per_s']:.1f} files/s, first answer {infer['first_rows_s']:.1f} s", flush=True)
        batches = {}
        for n in map(int, args.actors.split(",")):
            run = rates(run_batch(args.bundle, folder, work / f"out-{n}", n), args.clips)
            run["vs_infer"] = run["files_per_s"] / infer["files_per_s"]
            batches[str(n)] = run
            line = f"ser-batch, {n} actor(s): {run['files_per_s']:.1f} files/s ({run['vs_infer']:.2f}x ser-infer), "
            print(line + f"first rows {run['first_rows_s']:.1f} s", flush=True)
        single = work / "single"
        single.mkdir()
        shutil.copy(files[0], single)
        startup = {
            "ser_infer_s": run_infer(args.bundle, [single / files[0].name])["wall_s"],
            "ser_batch_s": run_batch(args.bundle, single, work / "out-single", 1)["wall_s"],
        }
        print(f"one clip, wall: ser-infer {startup['ser_infer_s']:.1f} s, ser-batch {startup['ser_batch_s']:.1f} s")
        first = next(iter(batches))
        rerun = run_batch(args.bundle, folder, work / f"out-{first}", int(first))
        print(f"rerun with nothing to do: {rerun['wall_s']:.1f} s", flush=True)
        report = {
            "environment": environment(),
            "bundle": {
                "path": args.bundle,
                "id": bundle.id,
                "model": bundle.manifest.model.name,
                "size": bundle.manifest.model.size,
                "precision": bundle.manifest.precision,
            },
            "clips": args.clips,
            "audio_s": audio_s,
            "ser_infer": infer,
            "ser_batch": batches,
            "rerun_nothing_to_do": rerun,
            "one_clip_job": startup,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
