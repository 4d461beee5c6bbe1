import io
import struct

import numpy as np
import pytest
import soundfile as sf

from ser.audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, load_audio
from ser.data.signals import synthetic_voice
from tests.hostile import float_wav, wav_claiming_rate


@pytest.mark.parametrize("name", ["clip.wav", "clip.flac", "clip.ogg", "clip.mp3"])
def test_decodes_every_supported_format(write_clip, name):
    samples = load_audio(write_clip(name, seconds=1.0))
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - SAMPLE_RATE) < 0.06 * SAMPLE_RATE  # mp3 adds encoder delay
    assert 0.05 < np.abs(samples).max() <= 1.0


def test_stereo_is_mixed_to_mono_and_resampled(write_clip):
    samples = load_audio(write_clip("stereo.flac", seconds=2.0, rate=44_100, channels=2))
    assert samples.shape == (2 * SAMPLE_RATE,)
    reference = load_audio(write_clip("mono.flac", seconds=2.0, rate=44_100, channels=1))
    # the fixture's second channel is 0.9x the first: the mean is 0.95x the mono clip
    np.testing.assert_allclose(samples, 0.95 * reference, atol=2e-3)


def test_resampling_keeps_pitch():
    rate, tone = 44_100, 440.0
    t = np.arange(rate) / rate
    samples = load_audio(np.sin(2 * np.pi * tone * t).astype(np.float32), sample_rate=rate)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(samples)
    assert abs(peak_hz - tone) < 2


def test_bytes_and_arrays_equal_the_file(write_clip):
    path = write_clip("clip.wav")
    from_file = load_audio(path)
    np.testing.assert_array_equal(load_audio(path.read_bytes()), from_file)
    raw, rate = sf.read(path, dtype="int16")
    np.testing.assert_allclose(load_audio(raw, sample_rate=rate), from_file, atol=1e-4)


def _pcm16_wav(channels: int, rate: int, list_chunk: bool = False, data_size: int | None = None) -> bytes:
    """A 16-bit WAV as soundfile writes it; with a LIST chunk before its data (as many recorders write), or its
    data chunk's size field set to `data_size` (a streamed WAV's 0xFFFFFFFF)."""
    mono = synthetic_voice(rate // 2, seed=3)
    samples = mono if channels == 1 else np.stack([mono, -0.5 * mono], axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    at = data.index(b"data")
    if data_size is not None:
        data[at + 4 : at + 8] = struct.pack("<I", data_size)
    if list_chunk:
        data[at:at] = b"LIST" + struct.pack("<I", 16) + b"INFOISFT" + struct.pack("<I", 4) + b"ser\x00"
        data[4:8] = struct.pack("<I", len(data) - 8)
    return bytes(data)


@pytest.mark.parametrize(("channels", "rate", "list_chunk"), [(1, 16_000, False), (2, 44_100, True), (1, 8_000, True)])
def test_16_bit_wavs_decode_to_the_samples_soundfile_reads(channels, rate, list_chunk):
    wav = _pcm16_wav(channels, rate, list_chunk)
    samples, read_rate = sf.read(io.BytesIO(wav), dtype="float32")  # libsndfile's own decode
    assert read_rate == rate
    np.testing.assert_array_equal(load_audio(wav), load_audio(samples, sample_rate=rate))


def test_16_bit_wavs_are_read_without_libsndfile_and_the_rest_with_it(monkeypatch, write_clip):
    def refuse(*args, **kwargs):
        raise RuntimeError("soundfile was asked")

    wav, flac, at_1_hz, floats = write_clip("clip.wav"), write_clip("clip.flac"), wav_claiming_rate(1), float_wav(0.5)
    streamed = [_pcm16_wav(channels, 16_000, data_size=0xFFFFFFFF) for channels in (1, 2)]
    for clip in streamed:
        assert len(load_audio(clip)) == 8_000  # no length in its header: soundfile reads it to its end
    monkeypatch.setattr(sf, "SoundFile", refuse)
    assert len(load_audio(wav)) == SAMPLE_RATE  # the standard library's wave module
    for source in (flac, floats, *streamed):
        with pytest.raises(AudioError, match="soundfile was asked"):
            load_audio(source)
    with pytest.raises(AudioError, match="a sample rate of 1 Hz is outside"):  # the same checks on this path
        load_audio(at_1_hz)


def _expect_error(source, *fragments, **kwargs):
    with pytest.raises(AudioError) as info:
        load_audio(source, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_empty_file_is_refused(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _expect_error(empty, "empty.wav", "empty")


@pytest.mark.parametrize("name", ["cut.wav", "cut.flac", "cut.mp3", "cut.ogg"])
def test_truncated_file_is_refused(write_clip, name):
    path = write_clip(name, seconds=2.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _expect_error(path, name)
    assert "truncated" in message or "not readable" in message


def test_truncated_wav_names_the_missing_bytes(write_clip):
    path = write_clip("cut.wav", seconds=1.0)
    path.write_bytes(path.read_bytes()[:-1000])
    _expect_error(path, "cut.wav", "truncated", "data chunk")


def test_text_file_is_not_audio(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("these are meeting notes, not audio\n" * 20)
    _expect_error(text, "notes.wav", "not readable audio")


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nowhere.wav", "nowhere.wav", "no such file")


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "Inf")])
def test_non_finite_samples_are_refused(tmp_path, bad, word):
    samples = np.zeros(SAMPLE_RATE, dtype=np.float32)
    samples[100] = bad
    _expect_error(samples, "<array>", word, sample_rate=SAMPLE_RATE)
    path = tmp_path / "bad.wav"
    sf.write(path, samples, SAMPLE_RATE, subtype="FLOAT")
    _expect_error(path, "bad.wav", word)


def test_zero_length_is_refused(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    _expect_error(path, "silent.wav", "zero length")
    _expect_error(np.zeros(0, dtype=np.float32), "zero length", sample_rate=SAMPLE_RATE)


def test_too_short_is_refused():
    _expect_error(np.zeros(MIN_SAMPLES - 1, dtype=np.float32), "too short", sample_rate=SAMPLE_RATE)


def test_array_needs_its_rate_and_layout():
    _expect_error(np.zeros(SAMPLE_RATE, dtype=np.float32), "sample_rate")
    _expect_error(np.zeros((2, SAMPLE_RATE), dtype=np.float32), "[channels, samples]", sample_rate=SAMPLE_RATE)


def test_file_rate_conflicting_with_argument(write_clip):
    _expect_error(write_clip("clip.wav", rate=22_050), "22050 Hz", sample_rate=SAMPLE_RATE)


@pytest.mark.parametrize("rate", [1, 3_999, 384_001, 4_000_000])
def test_absurd_rates_are_refused_from_the_header(rate):
    data = wav_claiming_rate(rate)  # 32 KB, and at 1 Hz "16,000 s" that would resample to 256 M samples
    with pytest.raises(AudioError, match=rf"<bytes>: a sample rate of {rate} Hz is outside 4000-384000 Hz"):
        load_audio(data)
    with pytest.raises(AudioError, match="outside 4000-384000 Hz"):
        load_audio(np.zeros(1000, np.float32), sample_rate=rate)


def test_a_header_claiming_2_to_the_36_samples_is_refused_before_decoding():
    from tests.hostile import flac_claiming_frames

    data = flac_claiming_frames((1 << 36) - 1)
    assert sf.info(io.BytesIO(data)).frames == (1 << 36) - 1  # libsndfile believes it
    with pytest.raises(AudioError, match="would decode to more than 2 GiB"):
        load_audio(data)
    with pytest.raises(AudioError, match=r"4294967\.3 s of audio is over the limit of 60 s"):
        load_audio(data, max_seconds=60)


def test_the_duration_limit_is_read_from_the_header(write_clip):
    clip = write_clip("long.flac", seconds=3.0, rate=44_100, channels=2)
    with pytest.raises(AudioError, match=r"long\.flac: 3\.0 s of audio is over the limit of 2 s"):
        load_audio(clip, max_seconds=2)
    assert len(load_audio(clip, max_seconds=3.5)) == 3 * SAMPLE_RATE


def test_samples_that_overflow_when_mixed_or_resampled_are_refused():
    # near the float32 limit: finite as stored; mixing in float64 keeps it finite, resampling does not
    with pytest.raises(AudioError, match=r"contains (NaN|Inf) samples once resampled from 44100 Hz"):
        load_audio(float_wav(3.4e38, rate=44_100))
    assert np.isfinite(load_audio(float_wav(3.4e38))).all()  # at 16 kHz: finite (the recognizer checks the answer)
    with pytest.raises(AudioError, match="contains Inf samples"):
        load_audio(float_wav(np.inf))


def test_an_unreadable_file_is_an_audio_error_of_that_file(tmp_path, write_clip):
    import subprocess
    import sys

    from tests.conftest import without_root_privileges

    clip = write_clip("locked.wav")
    clip.chmod(0)
    script = "from ser.audio import load_audio, AudioError\ntry: load_audio(r'%s')\nexcept AudioError as e: print(e)"
    result = subprocess.run(without_root_privileges([sys.executable, "-c", script % clip]), capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{clip}: cannot be read: Permission denied"
