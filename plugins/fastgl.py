"""Vocoder ``fastgl``: the notebook's Griffin-Lim inversion, batched and vectorised over clips.

The notebook inverts each clip with ``librosa.feature.inverse.mel_to_audio``: a non-negative
least-squares (NNLS) solve mel → linear power by L-BFGS-B (most of the time), then 32
Griffin-Lim iterations with momentum 0.99.  ``fastgl`` does the same two steps for the whole
batch at once, in NumPy:

1. **NNLS, batched.**  Minimise ½‖M·X − P‖² over X ≥ 0 for every clip and frame together
   (M the mel basis, P the mel power).  Warm start from the pseudo-inverse clipped at 0 (as
   librosa does), then ``nnls_iter`` steps of accelerated projected gradient (FISTA with step
   1/‖M‖²).  Each step is two small matrix products for the whole batch, no per-clip loop.
2. **Griffin-Lim with momentum, batched.**  librosa's algorithm (same STFT, same momentum
   update, same seeded initial phase per clip: a clip's audio equals ``librosa.griffinlim``'s
   to float32 rounding) on all clips at once, with the window, frame layout and overlap-add
   normalisation computed once instead of every iteration, in float32/complex64.

Options: ``n_iter`` (Griffin-Lim iterations), ``momentum``, ``nnls_iter``, ``batch_size``
(clips per vectorised block, to bound memory), ``random_state`` (seeded initial phase).
"""

import vaekit
from vaekit.default_plugins.griffinlim import GRIFFIN_LIM_RANGES


def nnls_mel_to_power(mel_power, basis, n_iter=60):
    """Non-negative X ≈ argmin ½‖basis·X − mel_power‖², for a batch of clips at once.

    ``mel_power`` is ``(N, n_mels, frames)``, ``basis`` ``(n_mels, n_freq)``; returns
    ``(N, n_freq, frames)``.  Warm start: the clipped pseudo-inverse (as librosa's NNLS);
    then FISTA.  All clips' frames are columns of one matrix, and the mel basis is sparse
    (each frequency bin lies in at most two bands), so a step costs two sparse products.
    A clip's result does not depend on the other clips in the batch: bit for bit on one machine
    (given a BLAS that rounds the same for the same shapes, as OpenBLAS does).
    """
    import numpy as np
    import scipy.sparse

    p = np.ascontiguousarray(mel_power, dtype=np.float32)
    n, n_mels, frames = p.shape
    cols = np.ascontiguousarray(p.transpose(1, 0, 2).reshape(n_mels, n * frames))
    dense = np.asarray(basis, dtype=np.float64)
    pinv = np.linalg.pinv(dense).astype(np.float32)
    # The warm start clip by clip, each a product of the same shape: BLAS kernels round differently
    # with the number of columns (OpenBLAS's Haswell sgemm: up to 3.8e-4 in the audio after
    # Griffin-Lim between batch_size=1 and one batch), so one product for the batch would make a
    # clip's audio depend on the batch it is in.  The sparse products below treat each column alone.
    # (NumPy's matmul over a stack runs one BLAS product per clip.)
    x = np.maximum(pinv @ p, 0.0).transpose(1, 0, 2).reshape(-1, n * frames)
    if n_iter > 0:
        m = scipy.sparse.csr_matrix(dense.astype(np.float32))
        mt = scipy.sparse.csr_matrix(m.T)
        # Step 1/L, L = the Lipschitz constant of the gradient = σ_max(M)².
        step = np.float32(1.0 / np.linalg.norm(dense, 2) ** 2)
        y, t = x.copy(), 1.0
        for _ in range(n_iter):
            grad = mt @ (m @ y - cols)
            x_next = np.maximum(y - step * grad, 0.0)
            t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            y = x_next + np.float32((t - 1.0) / t_next) * (x_next - x)
            x, t = x_next, t_next
    return x.reshape(-1, n, frames).transpose(1, 0, 2)


class BatchedGriffinLim:
    """Griffin-Lim with momentum (librosa's algorithm) for a batch of clips of one length.

    The STFT/iSTFT are librosa's (Hann window, centred, zero padding) with what does not
    change between iterations computed once: the window, the frame layout and the
    window-sum-square normalisation of the overlap-add.  Works in float32/complex64 with
    frames on the second axis, ``(N, frames, freq)``, so each FFT runs over contiguous rows.
    """

    def __init__(self, n_fft, hop_length, length):
        import numpy as np
        import scipy.signal

        self.n_fft, self.hop, self.length = n_fft, hop_length, length
        self.pad = n_fft // 2
        self.frames = 1 + length // hop_length
        self.window = scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)
        self.ola_length = n_fft + hop_length * (self.frames - 1)
        wss = np.zeros(self.ola_length, dtype=np.float32)
        for t in range(self.frames):
            wss[t * hop_length:t * hop_length + n_fft] += self.window ** 2
        tiny = np.finfo(np.float32).tiny
        self.inv_wss = np.where(wss > tiny, 1.0 / np.maximum(wss, tiny), 1.0).astype(np.float32)

    def stft(self, y):
        """(N, length) → (N, frames, 1 + n_fft // 2), complex64."""
        import numpy as np
        import scipy.fft

        padded = np.pad(y, ((0, 0), (self.pad, self.pad)))
        view = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft, axis=-1)
        frames = view[:, ::self.hop][:, :self.frames] * self.window
        return scipy.fft.rfft(frames, axis=-1)

    def istft(self, spec):
        """(N, frames, 1 + n_fft // 2) → (N, length), float32."""
        import numpy as np
        import scipy.fft

        frames = scipy.fft.irfft(spec, n=self.n_fft, axis=-1).astype(np.float32, copy=False) * self.window
        out = np.zeros((spec.shape[0], self.ola_length), dtype=np.float32)
        for t in range(self.frames):
            out[:, t * self.hop:t * self.hop + self.n_fft] += frames[:, t]
        out *= self.inv_wss
        y = out[:, self.pad:self.pad + self.length]
        if y.shape[1] < self.length:
            y = np.pad(y, ((0, 0), (0, self.length - y.shape[1])))
        return y

    def __call__(self, magnitude, n_iter=32, momentum=0.99, random_state=0):
        """Magnitudes ``(N, 1 + n_fft // 2, frames)`` (librosa's layout) → waveforms ``(N, length)``.

        With an int ``random_state`` each clip starts from the phase ``librosa.griffinlim`` draws for
        one clip, so each output equals ``librosa.griffinlim(magnitude[i], ...)``.
        """
        import numpy as np

        mag = np.ascontiguousarray(np.swapaxes(np.asarray(magnitude, dtype=np.float32), 1, 2))
        if mag.shape[1] != self.frames:
            raise ValueError(f"expected {self.frames} frames for clips of {self.length} samples, got {mag.shape[1]}")
        # One initial phase for every clip, drawn as librosa.griffinlim draws it for one clip: a clip's
        # audio then does not depend on which batch it is in, and equals librosa's clip by clip.
        rng = np.random.RandomState(random_state) if isinstance(random_state, int) else np.random.default_rng()
        phase = 2 * np.pi * rng.random(size=(mag.shape[2], mag.shape[1]))
        angles = (mag * np.exp(1j * phase).T[None]).astype(np.complex64)
        eps = np.finfo(np.float32).tiny
        tprev = None
        for _ in range(n_iter):
            rebuilt = self.stft(self.istft(angles))
            angles = rebuilt - (momentum / (1 + momentum)) * tprev if tprev is not None else rebuilt.copy()
            angles /= np.abs(angles) + eps
            angles *= mag
            tprev = rebuilt
        return self.istft(angles)


def build(audio, n_iter=32, momentum=0.99, nnls_iter=60, batch_size=64, random_state=0):
    """The notebook's Griffin-Lim inversion, batched and vectorised over clips (NNLS by FISTA)."""
    import librosa
    import numpy as np

    from vaekit.audio import mel_basis

    if n_iter < 1 or nnls_iter < 0 or batch_size < 1:
        raise ValueError(f"n_iter ≥ 1, nnls_iter ≥ 0 and batch_size ≥ 1 are required, got "
                         f"n_iter={n_iter}, nnls_iter={nnls_iter}, batch_size={batch_size}")
    basis = mel_basis(audio)
    griffin_lim = BatchedGriffinLim(audio.n_fft, audio.hop_length, audio.samples)

    def vocode(mel_db):
        mel_db = np.asarray(mel_db, dtype=np.float32)
        out = np.zeros((len(mel_db), audio.samples), dtype=np.float32)
        for start in range(0, len(mel_db), batch_size):
            block = mel_db[start:start + batch_size]
            power = nnls_mel_to_power(librosa.db_to_power(block), basis, nnls_iter)
            magnitude = np.sqrt(power).astype(np.float32)  # librosa's mel_to_stft with power=2
            out[start:start + len(block)] = griffin_lim(magnitude, n_iter, momentum, random_state)
        return out

    return vocode


@vaekit.hookimpl
def register_vocoders(register):
    register("fastgl", build, options={**GRIFFIN_LIM_RANGES, "nnls_iter": {"min": 0, "max": 10_000},
                                       "batch_size": {"min": 1, "max": 65_536}},
             preflight={"n_iter": 1, "nnls_iter": 1})
