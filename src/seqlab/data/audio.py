"""Audio in, log-mel features out: reading, resampling, the STFT, a mel filter bank, SpecAugment.

The file reads bottom-up: reading a file (:func:`load_audio`), changing its sample rate
(:func:`resample`, a polyphase windowed-sinc filter), the mel scale and its triangular filter
bank (:func:`mel_filter_bank`), the short-time Fourier transform's power spectrum
(:func:`power_spectrogram`), then :func:`log_mel` and :class:`LogMel`, which chain them and
normalise each utterance, and :func:`spec_augment`, the masking used while training.

Everything is plain torch (torchaudio has no build for the torch seqlab uses); reading needs the
optional ``soundfile`` package (``pip install seqlab[audio]``).

Shapes (used in every docstring of this file):

    L  samples of a waveform; sr its sample rate in Hz
    F  frames of a spectrogram, F = 1 + floor(L / hop_length) (frames centred on t * hop)
    K  FFT bins, K = n_fft // 2 + 1; M mel bands
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from seqlab.data.readers import DataError

__all__ = [
    "LogMel",
    "hz_to_mel",
    "load_audio",
    "log_mel",
    "mel_filter_bank",
    "mel_to_hz",
    "normalize_features",
    "power_spectrogram",
    "resample",
    "spec_augment",
]


def _soundfile():
    try:
        import soundfile
    except ImportError:
        raise ImportError(
            "reading audio needs the soundfile package: pip install 'seqlab[audio]' "
            "(or pip install soundfile)"
        ) from None
    return soundfile


def _kernel_table(up: int, down: int, zeros: int, rolloff: float) -> tuple[torch.Tensor, int]:
    r"""The polyphase filter: one row of taps for each of the `up` output phases.

    Output sample n sits at input time t_n = n * down / up. With b = floor(t_n) and
    phase p = (n * down) mod up, its fractional part is p / up, and

    .. math::
        y_n = \sum_{o = 1 - W}^{W} x_{b + o}\; h(p / up - o), \qquad
        h(\tau) = c\, \mathrm{sinc}(c\, \tau)\; w(\tau), \qquad
        w(\tau) = \tfrac12 \bigl(1 + \cos(\pi \tau / W)\bigr) \ (|\tau| < W, \text{ else } 0)

    with sinc(x) = sin(pi x) / (pi x), cutoff c = rolloff * min(1, up / down) (of the input's
    Nyquist frequency: below the output's Nyquist when the rate goes down, so nothing aliases)
    and half-width W = ceil(zeros / c) input samples (`zeros` zero crossings of the sinc each
    side, under a Hann window). Returns the table (up, 2W) and W.
    """
    cutoff = rolloff * min(1.0, up / down)
    width = math.ceil(zeros / cutoff)
    offsets = torch.arange(1 - width, width + 1, dtype=torch.float64)  # (2W,)
    phases = torch.arange(up, dtype=torch.float64)[:, None] / up  # (up, 1)
    tau = phases - offsets[None, :]  # (up, 2W)
    window = torch.where(
        tau.abs() < width, 0.5 * (1 + torch.cos(math.pi * tau / width)), torch.zeros_like(tau)
    )
    return cutoff * torch.sinc(cutoff * tau) * window, width


def resample(
    waveform: torch.Tensor, orig_rate: int, new_rate: int, zeros: int = 16, rolloff: float = 0.94
) -> torch.Tensor:
    """Change a waveform's sample rate with a polyphase windowed-sinc filter (band-limited).

    The rates are reduced to up / down = new_rate / orig_rate in lowest terms (22050 -> 16000 Hz
    is 320 / 441); each output sample is a Hann-windowed sinc interpolation of the input around
    its exact time (see :func:`_kernel_table`), so a tone keeps its frequency and amplitude and
    content above the new Nyquist frequency is filtered out rather than folded back.
    Linear interpolation would do neither.

    ======== ==================================================
    waveform (L,) or (C, L) float
    output   (ceil(L * new_rate / orig_rate),) or (C, ...) float
    ======== ==================================================
    """
    for name, rate in (("orig_rate", orig_rate), ("new_rate", new_rate)):
        if not isinstance(rate, int) or rate < 1:
            raise ValueError(f"{name} should be a positive integer (Hz), got {rate!r}")
    if orig_rate == new_rate:
        return waveform
    divisor = math.gcd(orig_rate, new_rate)
    up, down = new_rate // divisor, orig_rate // divisor
    table, width = _kernel_table(up, down, zeros, rolloff)
    squeeze = waveform.dim() == 1
    x = waveform.unsqueeze(0) if squeeze else waveform  # (C, L)
    length = x.size(-1)
    out_length = math.ceil(length * up / down)
    n = torch.arange(out_length, dtype=torch.long)
    base, phase = (n * down) // up, (n * down) % up  # (L_out,) each
    # Input indices b + o for o in 1-W..W, shifted by the zero padding of W samples each side.
    index = base[:, None] + torch.arange(1 - width, width + 1)[None, :] + width  # (L_out, 2W)
    padded = torch.nn.functional.pad(x.double(), (width, width + 1))  # (C, L + 2W + 1)
    taps = padded[:, index]  # (C, L_out, 2W)
    out = (taps * table[phase][None]).sum(-1).to(waveform.dtype)  # (C, L_out)
    return out[0] if squeeze else out


def load_audio(path: str | Path, sample_rate: int = 16000, resample_audio: bool = True) -> torch.Tensor:
    """A WAV / FLAC / OGG file (anything libsndfile reads) as a mono float waveform (L,).

    Channels are averaged (mix-down). A file at another rate than `sample_rate` is resampled
    with :func:`resample` when `resample_audio`, else refused with a ValueError naming both
    rates and the fix. Unreadable and empty files raise :class:`DataError` naming the file.
    """
    soundfile = _soundfile()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file {path} does not exist")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (L, C)
    except (RuntimeError, OSError) as error:  # soundfile.LibsndfileError is a RuntimeError
        raise DataError(
            f"{path}: not a readable audio file ({error}); give WAV, FLAC or OGG audio"
        ) from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: the audio file holds no samples")
    waveform = torch.from_numpy(data).mean(dim=1)  # (L,) mono mix-down
    if rate != sample_rate:
        if not resample_audio:
            raise ValueError(
                f"{path} has sample rate {rate} Hz but {sample_rate} Hz is expected; convert it "
                f"(e.g. `sox {path.name} -r {sample_rate} out.wav`) or turn resampling on "
                f"(data.resample=true)"
            )
        waveform = resample(waveform, int(rate), sample_rate)
    return waveform


def hz_to_mel(frequency: torch.Tensor | float) -> torch.Tensor:
    r"""The HTK mel scale, m(f) = 2595 log10(1 + f / 700) (O'Shaughnessy 1987)."""
    frequency = torch.as_tensor(frequency, dtype=torch.float64)
    return 2595.0 * torch.log10(1.0 + frequency / 700.0)


def mel_to_hz(mel: torch.Tensor | float) -> torch.Tensor:
    r"""The inverse of :func:`hz_to_mel`, f(m) = 700 (10^{m / 2595} - 1)."""
    mel = torch.as_tensor(mel, dtype=torch.float64)
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filter_bank(
    n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    r"""Triangular filters spaced evenly on the HTK mel scale: a (M, K) matrix.

    With M + 2 edge frequencies e_0 < e_1 < ... < e_{M+1} evenly spaced in mel between f_min and
    f_max (m(f) = 2595 log10(1 + f / 700)), and FFT bin k at frequency f_k = k * sr / n_fft,
    filter m (1-based) rises from e_{m-1} to a peak of 1 at e_m and falls to 0 at e_{m+1}:

    .. math::
        W_{m,k} = \max\Bigl(0,\ \min\Bigl(\frac{f_k - e_{m-1}}{e_m - e_{m-1}},\
                  \frac{e_{m+1} - f_k}{e_{m+1} - e_m}\Bigr)\Bigr)

    (HTK's filters, unnormalised: librosa's ``mel(htk=True, norm=None)``). A mel band's energy is
    then sum_k W_{m,k} |X_k|^2.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if n_mels < 1 or n_fft < 2:
        raise ValueError(f"need n_mels >= 1 and n_fft >= 2, got n_mels={n_mels}, n_fft={n_fft}")
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2}, got "
            f"f_min={f_min}, f_max={f_max}"
        )
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft  # (K,)
    mels = torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2)
    edges = mel_to_hz(mels)  # (M + 2,)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1) each
    rising = (bins[None, :] - lower) / (centre - lower)  # (M, K)
    falling = (upper - bins[None, :]) / (upper - centre)  # (M, K)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def power_spectrogram(
    waveform: torch.Tensor, n_fft: int = 400, hop_length: int = 160, win_length: int | None = None
) -> torch.Tensor:
    r"""|STFT|^2 with a periodic Hann window: (L,) -> (F, K).

    .. math::
        X_{t,k} = \sum_{n=0}^{N-1} w_n\, x_{t h + n - N/2}\, e^{-2\pi i k n / N}, \qquad
        w_n = \tfrac12 \bigl(1 - \cos(2\pi n / N)\bigr)

    N = n_fft, h = hop_length; frames are centred (the signal is zero padded by N / 2 each
    side), so there are F = 1 + floor(L / h) of them, frame t centred on sample t h.
    """
    win_length = win_length or n_fft
    window = torch.hann_window(win_length, periodic=True, dtype=waveform.dtype, device=waveform.device)
    spectrum = torch.stft(
        waveform, n_fft, hop_length=hop_length, win_length=win_length, window=window,
        center=True, pad_mode="constant", return_complex=True,
    )  # (K, F)
    return spectrum.abs().pow(2).transpose(0, 1)  # (F, K)


def normalize_features(features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    r"""Per-utterance mean / variance normalisation of each band: (F, M) -> (F, M).

    z_{t,m} = (x_{t,m} - mu_m) / sqrt(sigma_m^2 + eps), mean and variance over the utterance's
    frames: it removes a fixed channel gain (a quieter recording shifts log energies by a
    constant) and puts every band on the same scale.
    """
    mean = features.mean(dim=0, keepdim=True)  # (1, M)
    var = features.var(dim=0, unbiased=False, keepdim=True)  # (1, M)
    return (features - mean) / torch.sqrt(var + eps)


def log_mel(
    waveform: torch.Tensor,
    sample_rate: int = 16000,
    n_mels: int = 40,
    n_fft: int = 400,
    hop_length: int = 160,
    f_min: float = 0.0,
    f_max: float | None = None,
    normalize: bool = True,
    filter_bank: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Log-mel features of a waveform: (L,) -> (F, M).

    x_{t,m} = log(max(sum_k W_{m,k} |X_{t,k}|^2, 1e-10)), then per-utterance normalisation
    (:func:`normalize_features`) when `normalize`. The defaults are the usual 25 ms windows every
    10 ms at 16 kHz. Pass `filter_bank` (M, K) to reuse one.
    """
    if waveform.dim() != 1 or waveform.numel() == 0:
        raise ValueError(f"waveform should be a non-empty (L,) tensor, got shape {tuple(waveform.shape)}")
    if filter_bank is None:
        filter_bank = mel_filter_bank(n_mels, n_fft, sample_rate, f_min, f_max)
    power = power_spectrogram(waveform.float(), n_fft, hop_length)  # (F, K)
    features = torch.log(torch.clamp(power @ filter_bank.T, min=1e-10))  # (F, M)
    return normalize_features(features) if normalize else features


@dataclass
class LogMel:
    """The feature settings of a run, as a callable: waveform (L,) -> features (F, M)."""

    sample_rate: int = 16000
    n_mels: int = 40
    n_fft: int = 400
    hop_length: int = 160
    normalize: bool = True

    def __post_init__(self) -> None:
        self.filter_bank = mel_filter_bank(self.n_mels, self.n_fft, self.sample_rate)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        return log_mel(
            waveform, self.sample_rate, self.n_mels, self.n_fft, self.hop_length,
            normalize=self.normalize, filter_bank=self.filter_bank,
        )


def spec_augment(
    features: torch.Tensor,
    time_masks: int = 2,
    time_width: int = 20,
    freq_masks: int = 2,
    freq_width: int = 8,
    max_time_fraction: float = 0.2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SpecAugment's masking (Park et al. 2019), without time warping: (F, M) -> (F, M).

    Each of `freq_masks` masks sets f consecutive bands [f0, f0 + f) to 0 (the mean, after
    normalisation), f uniform in [0, freq_width]; each of `time_masks` masks does the same to
    t consecutive frames, t uniform in [0, time_width] and at most `max_time_fraction` of the
    utterance. Used on training batches only; a new tensor is returned.
    """
    frames, bands = features.shape
    out = features.clone()

    def draw(high: int) -> int:
        return int(torch.randint(0, high + 1, (1,), generator=generator))

    for _ in range(freq_masks):
        width = draw(min(freq_width, bands))
        start = draw(bands - width)
        out[:, start : start + width] = 0.0
    limit = min(time_width, int(max_time_fraction * frames))
    for _ in range(time_masks):
        width = draw(limit)
        start = draw(frames - width)
        out[start : start + width, :] = 0.0
    return out
