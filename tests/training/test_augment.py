import numpy as np
import pytest

from ser.training.augment import AugmentOptions, build_augment
from tests.conftest import speech_like

OFF = AugmentOptions(pitch_semitones=0, snr_db=(0, 0), gain_db=0, shift_seconds=0, probability=1.0)


@pytest.mark.parametrize(
    "options",
    [
        AugmentOptions(probability=1.0),
        AugmentOptions(pitch_semitones=3, snr_db=(0, 0), gain_db=0, shift_seconds=0, probability=1.0),
        AugmentOptions(pitch_semitones=0, snr_db=(0, 0), gain_db=0, shift_seconds=0.5, probability=1.0),
    ],
)
def test_keeps_length_dtype_and_range_and_changes_the_clip(options):
    clip = speech_like(1.5)
    augment = build_augment(options)
    out = augment(clip)
    assert out.shape == clip.shape and out.dtype == np.float32
    assert np.abs(out).max() <= 1.0
    assert not np.allclose(out, clip)
    assert not np.allclose(augment(clip), out)  # a new draw every call


def test_all_off_is_identity():
    clip = speech_like(1.0)
    np.testing.assert_array_equal(build_augment(OFF)(clip), clip)


def test_noise_lands_at_the_requested_snr():
    clip = speech_like(2.0)
    options = AugmentOptions(pitch_semitones=0, snr_db=(20.0, 20.0), gain_db=0, shift_seconds=0, probability=1.0)
    noise = build_augment(options)(clip) - clip
    snr = 10 * np.log10(np.mean(clip**2) / np.mean(noise**2))
    assert snr == pytest.approx(20.0, abs=0.5)
