"""Log-mel features: the mel filter bank by hand, a tone in its band, STFT framing, the resampler."""

import math

import pytest
import torch

from seqlab.data.audio import (
    hz_to_mel,
    log_mel,
    mel_filter_bank,
    mel_to_hz,
    normalize_features,
    power_spectrogram,
    resample,
    spec_augment,
)


def _htk_mel(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def _htk_hz(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def test_mel_scale_is_htk_and_inverts():
    assert float(hz_to_mel(700.0)) == pytest.approx(2595.0 * math.log10(2.0))
    assert float(hz_to_mel(1000.0)) == pytest.approx(1000.0, abs=0.1)  # the scale's anchor
    freqs = torch.tensor([0.0, 123.0, 4000.0, 7999.0], dtype=torch.float64)
    torch.testing.assert_close(mel_to_hz(hz_to_mel(freqs)), freqs)


def test_one_band_filter_bank_by_hand():
    # sr 8000, n_fft 8: FFT bins at 0, 1000, 2000, 3000, 4000 Hz. One band from 0 to 4000 Hz
    # peaks at the mel midpoint c = f(m(4000) / 2) ~ 1113.8 Hz.
    centre = _htk_hz(_htk_mel(4000.0) / 2)
    assert centre == pytest.approx(1113.8, abs=0.1)
    expected = [0.0, 1000 / centre, (4000 - 2000) / (4000 - centre), (4000 - 3000) / (4000 - centre), 0.0]
    bank = mel_filter_bank(1, 8, 8000)
    assert bank.shape == (1, 5)
    torch.testing.assert_close(bank[0], torch.tensor(expected, dtype=torch.float32))


def test_two_bands_share_their_edge():
    # Edges e0..e3 evenly spaced in mel over 0..4000 Hz; band 1 falls where band 2 rises.
    edges = [_htk_hz(_htk_mel(4000.0) * i / 3) for i in range(4)]
    bank = mel_filter_bank(2, 8, 8000)
    for k, f in enumerate([0.0, 1000.0, 2000.0, 3000.0, 4000.0]):
        first = max(0.0, min((f - edges[0]) / (edges[1] - edges[0]), (edges[2] - f) / (edges[2] - edges[1])))
        second = max(0.0, min((f - edges[1]) / (edges[2] - edges[1]), (edges[3] - f) / (edges[3] - edges[2])))
        assert float(bank[0, k]) == pytest.approx(first, abs=1e-6)
        assert float(bank[1, k]) == pytest.approx(second, abs=1e-6)


def test_pure_tone_lands_in_its_mel_band():
    sr, n_mels = 16000, 40
    edges = [_htk_hz(_htk_mel(8000.0) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    for tone in (300.0, 1000.0, 3000.0):
        t = torch.arange(sr, dtype=torch.float64) / sr
        wave = torch.sin(2 * math.pi * tone * t).float()
        energy = log_mel(wave, sr, n_mels, normalize=False).mean(dim=0)  # (M,)
        centres = edges[1:-1]
        nearest = min(range(n_mels), key=lambda m: abs(centres[m] - tone))
        assert int(energy.argmax()) == nearest


def test_stft_frame_count_and_parseval():
    for length in (1, 159, 160, 161, 16000):
        spec = power_spectrogram(torch.randn(length), n_fft=400, hop_length=160)
        assert spec.shape == (1 + length // 160, 201)
    # A centred frame of a constant signal: X_0 = sum of the Hann window = N / 2.
    spec = power_spectrogram(torch.ones(4000), n_fft=400, hop_length=160)
    assert float(spec[10, 0]) == pytest.approx(200.0**2, rel=1e-4)


def test_normalisation_gives_zero_mean_unit_variance_and_ignores_gain():
    wave = torch.randn(8000)
    features = log_mel(wave)
    torch.testing.assert_close(features.mean(0), torch.zeros(40), atol=1e-4, rtol=0)
    torch.testing.assert_close(features.std(0, unbiased=False), torch.ones(40), atol=1e-3, rtol=0)
    # A gain multiplies the power by g^2, a constant shift of each log band: normalised away.
    torch.testing.assert_close(log_mel(wave * 0.1), features, atol=1e-3, rtol=0)
    assert normalize_features(torch.ones(5, 3)).abs().max() == 0


def test_spec_augment_masks_bands_and_frames_with_zeros():
    features = torch.ones(100, 40)
    generator = torch.Generator().manual_seed(0)
    masked = spec_augment(features, time_masks=2, time_width=10, freq_masks=2, freq_width=5,
                          generator=generator)
    zero_rows = int((masked == 0).all(dim=1).sum())
    zero_cols = int((masked == 0).all(dim=0).sum())
    assert 0 < zero_rows <= 20 and 0 < zero_cols <= 10
    assert set(masked.unique().tolist()) <= {0.0, 1.0}
    assert bool((features == 1).all())  # the input is left alone


def _sine(freq, rate, seconds=1.0):
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    return torch.sin(2 * math.pi * freq * t)


@pytest.mark.parametrize("orig, new", [(22050, 16000), (8000, 16000), (44100, 16000)])
def test_resampled_sine_keeps_its_frequency_and_amplitude(orig, new):
    out = resample(_sine(440.0, orig), orig, new)
    assert out.shape == (math.ceil(orig * new / orig),)
    expected = _sine(440.0, new)[: out.numel()]
    # Away from the ends (where the filter sees the zero padding) it is the ideal sine.
    assert float((out - expected)[100:-100].abs().max()) < 2e-3
    spectrum = torch.fft.rfft(out * torch.hann_window(out.numel(), dtype=out.dtype)).abs()
    assert int(spectrum.argmax()) == 440  # 1 s of signal: bin k is k Hz


def test_resampling_down_filters_what_would_alias():
    # 9 kHz is above the new Nyquist frequency (8 kHz): it must vanish, not fold to 7 kHz.
    out = resample(_sine(9000.0, 22050), 22050, 16000)
    assert float(out[200:-200].pow(2).mean()) < 1e-4
    kept = resample(_sine(6000.0, 22050), 22050, 16000)
    assert float(kept[200:-200].pow(2).mean()) == pytest.approx(0.5, rel=0.02)


def test_resample_batched_channels_and_bad_rates():
    two = torch.stack([_sine(300.0, 8000), _sine(500.0, 8000)]).float()
    out = resample(two, 8000, 16000)
    assert out.shape == (2, 16000) and out.dtype == torch.float32
    torch.testing.assert_close(out[1], resample(two[1], 8000, 16000))
    assert resample(two, 8000, 8000) is two
    with pytest.raises(ValueError, match="orig_rate should be a positive integer"):
        resample(two, 0, 16000)
