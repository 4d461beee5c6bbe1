"""A demo corpus spoken offline by espeak-ng: the same sentences in seven emotional prosodies.

Each emotion gets a prosody profile after the acoustic correlates reported for acted speech (anger and
joy: high, wide pitch and fast; sadness: low, flat and slow; fear: high, narrow, fast and trembling;
disgust: low, slow and creaky; surprise: the highest and widest pitch). Every clip draws its own
values around its profile, a random voice and sentence, so that neighbouring classes overlap and a
model has something to learn rather than a constant to spot. It is the demo's and the tests' data;
real users bring their own recordings.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ser.audio import SAMPLE_RATE
from ser.labels import LABELS
from ser.staging import StagedFolder

ESPEAK = "espeak-ng"

SENTENCES: tuple[str, ...] = (
    "Kids are talking by the door.",
    "Dogs are sitting by the door.",
    "It's eleven o'clock.",
    "That is exactly what happened.",
    "I'm on my way to the meeting.",
    "I wonder what this is about.",
    "The airplane is almost full.",
    "Maybe tomorrow it will be cold.",
    "I would like a new alarm clock.",
    "I think I have a doctor's appointment.",
    "Don't forget a jacket.",
    "I think I've seen this before.",
    "The surface is slick.",
    "We'll stop in a couple of minutes.",
    "Say the word back.",
    "The train leaves at noon.",
    "She put the letter on the table.",
    "Nobody told me about the change.",
)
VOICES: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5")


@dataclass(frozen=True)
class Prosody:
    """Centre of one emotion's clips. espeak-ng units: pitch 0-99, rate in words/minute, amplitude
    0-200; range is SSML's percentage of the voice's normal pitch range."""

    pitch: float
    pitch_range: float
    rate: float
    amplitude: float
    tremor: float = 0.0  # depth of a 5-8 Hz amplitude modulation, 0-1
    strain: float = 0.0  # tanh overdrive: pressed, tense phonation
    special_voice: str | None = None  # a voice variant this emotion uses for about a third of clips


PROFILES: dict[str, Prosody] = {
    "angry": Prosody(pitch=56, pitch_range=170, rate=195, amplitude=170, strain=2.5),
    "disgusted": Prosody(pitch=30, pitch_range=120, rate=135, amplitude=110, special_voice="croak"),
    "fearful": Prosody(pitch=70, pitch_range=80, rate=205, amplitude=85, tremor=0.45),
    "happy": Prosody(pitch=64, pitch_range=200, rate=185, amplitude=130),
    "neutral": Prosody(pitch=45, pitch_range=70, rate=165, amplitude=100),
    "sad": Prosody(pitch=28, pitch_range=35, rate=120, amplitude=65, special_voice="whisper"),
    "surprised": Prosody(pitch=80, pitch_range=260, rate=170, amplitude=140),
}
# Per-clip spread (one standard deviation) around a profile: wide enough that classes overlap.
JITTER = Prosody(pitch=9, pitch_range=35, rate=20, amplitude=20, tremor=0.1, strain=0.6)
NOISE_SNR_DB = (25.0, 45.0)


class SynthError(RuntimeError):
    """espeak-ng is missing or failed."""


def find_espeak() -> str:
    path = shutil.which(ESPEAK)
    if path is None:
        raise SynthError(
            f"{ESPEAK} not found on PATH: install it (Debian/Ubuntu: apt-get install espeak-ng; "
            "macOS: brew install espeak-ng); `make demo` and `make test` install it where they can"
        )
    return path


@dataclass(frozen=True)
class ClipPlan:
    """Everything one clip is made from: with the seed, the corpus is reproducible."""

    label: str
    index: int
    sentence: str
    voice: str
    pitch: int
    pitch_range: int
    rate: int
    amplitude: int
    tremor: float
    tremor_hz: float
    strain: float
    snr_db: float
    noise_seed: int

    @property
    def filename(self) -> str:
        return f"{self.label}_{self.index:04d}.wav"


def plan_clip(label: str, index: int, seed: int) -> ClipPlan:
    rng = np.random.default_rng([seed, LABELS.index(label), index])
    p = PROFILES[label]

    def draw(centre: float, spread: float, low: float, high: float) -> float:
        return float(np.clip(rng.normal(centre, spread), low, high))

    voice = str(rng.choice(VOICES))
    if p.special_voice is not None and rng.random() < 0.35:
        voice = p.special_voice
    return ClipPlan(
        label=label,
        index=index,
        sentence=str(rng.choice(SENTENCES)),
        voice=voice,
        pitch=round(draw(p.pitch, JITTER.pitch, 0, 99)),
        pitch_range=round(draw(p.pitch_range, JITTER.pitch_range, 10, 400)),
        rate=round(draw(p.rate, JITTER.rate, 80, 320)),
        amplitude=round(draw(p.amplitude, JITTER.amplitude, 30, 200)),
        tremor=draw(p.tremor, JITTER.tremor, 0, 0.8) if p.tremor else 0.0,
        tremor_hz=float(rng.uniform(5, 8)),
        strain=draw(p.strain, JITTER.strain, 0, 5) if p.strain else 0.0,
        snr_db=float(rng.uniform(*NOISE_SNR_DB)),
        noise_seed=int(rng.integers(2**31)),
    )


def speak(plan: ClipPlan, espeak: str) -> np.ndarray:
    """Float32 mono at SAMPLE_RATE: espeak-ng's voice, then tremor, strain and a little room noise."""
    ssml = f'<speak><prosody range="{plan.pitch_range}%">{plan.sentence}</prosody></speak>'
    command = [espeak, "-m", "-v", f"en+{plan.voice}", "-p", str(plan.pitch), "-s", str(plan.rate)]
    command += ["-a", str(plan.amplitude), "--stdout", ssml]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise SynthError(f"{ESPEAK} failed for {plan.filename}: {result.stderr.decode(errors='replace').strip()}")
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
    t = np.arange(len(audio), dtype=np.float32) / SAMPLE_RATE
    if plan.tremor:
        audio *= 1.0 + plan.tremor * np.sin(2 * np.pi * plan.tremor_hz * t, dtype=np.float32)
    if plan.strain:
        audio = np.tanh(plan.strain * audio) / np.tanh(plan.strain)
    rng = np.random.default_rng(plan.noise_seed)
    power = float(np.mean(audio**2)) or 1e-8
    audio += rng.normal(0, np.sqrt(power / 10 ** (plan.snr_db / 10)), len(audio)).astype(np.float32)
    return np.clip(audio, -1.0, 1.0)


def synthesize_corpus(
    out: str | Path, per_class: int, seed: int = 0, overwrite: bool = False, progress=None
) -> list[ClipPlan]:
    """Write `per_class` clips of each label to out/<Label>/<label>_NNNN.wav (16 kHz PCM), all or none.

    `progress`, if given, is called once per clip written (for a progress bar).
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    espeak = find_espeak()
    plans = [plan_clip(label, i, seed) for label in LABELS for i in range(per_class)]
    with StagedFolder(out, overwrite) as staged, ThreadPoolExecutor(max_workers=4) as pool:
        for label in LABELS:
            (staged.dir / label.capitalize()).mkdir()

        def write(plan: ClipPlan) -> None:
            audio = speak(plan, espeak)
            sf.write(staged.dir / plan.label.capitalize() / plan.filename, audio, SAMPLE_RATE, subtype="PCM_16")
            if progress is not None:
                progress()

        list(pool.map(write, plans))
        staged.commit()
    return plans
