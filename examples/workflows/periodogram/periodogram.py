#!/usr/bin/env python3
"""Power spectrum of a binned light curve (from the `lightcurve` workflow) on a period grid.

Method. The light curve is evenly sampled and has no gaps, so the Lomb-Scargle
periodogram reduces to the classical Fourier power spectrum. It is computed with
a radix-2 FFT of the mean-subtracted counts, zero-padded to at least 4x their
length (so the spectrum is oversampled at least 4x with respect to the Fourier
resolution 1/T, where T is the light-curve length), and Leahy-normalised:

    P(f) = 2 |sum_k (c_k - mean(c)) exp(-2 pi i f t_k)|^2 / sum_k c_k

For pure Poisson noise P follows a chi^2 distribution with 2 degrees of freedom
(mean 2).

Output grid. n_periods trial frequencies evenly spaced from 1/p_max to 1/p_min
(listed as periods, ascending). Each grid point reports the MAXIMUM power of the
oversampled spectrum within its frequency cell (half-way to its neighbours), so
that a narrow peak is never lost between two grid points and periodograms of
several observations on the same grid can be summed. The best period is then
refined by evaluating the spectrum directly around the highest peak, with
parabolic interpolation.

A light curve without counts is an analysis exception of kind "NoData"; a
period range that the light curve cannot sample is kind "InvalidInput".

Standard library only; Python 3.9+.
"""

import argparse
import cmath
import json
import math
import os
import sys

EXCEPTION_FILE = "oda-exception.json"
MAX_BINS = 100000
OVERSAMPLE = 4
REFINE_STEPS = 10  # evaluations on each side of the highest FFT bin


class AnalysisException(Exception):
    """A scientific failure, reported to the mesh through oda-exception.json."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


def write_json(path, obj):
    """Deterministic JSON: sorted keys, no whitespace, no NaN, trailing newline."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def load_lightcurve(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise AnalysisException("InvalidInput", "cannot read the light curve: %s" % e)
    if not isinstance(data, dict):
        raise AnalysisException("InvalidInput", "the light curve is not a JSON object")
    bin_s = data.get("bin_s")
    counts = data.get("counts")
    if isinstance(bin_s, bool) or not isinstance(bin_s, (int, float)) or not (math.isfinite(bin_s) and bin_s > 0):
        raise AnalysisException("InvalidInput", "light curve: bin_s %r is not a positive number" % (bin_s,))
    if not isinstance(counts, list) or not all(
            isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and c >= 0
            for c in counts):
        raise AnalysisException("InvalidInput", "light curve: counts must be a list of non-negative numbers")
    return data.get("obs_id"), float(bin_s), [float(c) for c in counts]


def fft(a):
    """In-place iterative radix-2 FFT (exp(-2 pi i jk/n) convention); len(a) is a power of 2."""
    n = len(a)
    j = 0
    for i in range(1, n):
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            a[i], a[j] = a[j], a[i]
    twiddle = [cmath.exp(-2j * math.pi * k / n) for k in range(n // 2)]
    length = 2
    while length <= n:
        half = length >> 1
        stride = n // length
        tw = twiddle[::stride]
        for start in range(0, n, length):
            for k in range(half):
                u = a[start + k]
                v = a[start + k + half] * tw[k]
                a[start + k] = u + v
                a[start + k + half] = u - v
        length <<= 1


def dft_power(ys, bin_s, f, norm):
    """Leahy power at one frequency, by Horner's rule on exp(-2 pi i f bin_s)."""
    w = cmath.exp(-2j * math.pi * f * bin_s)
    acc = 0j
    for y in reversed(ys):
        acc = acc * w + y
    return norm * (acc.real * acc.real + acc.imag * acc.imag)


def periodogram(obs_id, bin_s, counts, p_min, p_max, n_periods):
    if not (math.isfinite(p_min) and math.isfinite(p_max) and 0 < p_min < p_max):
        raise AnalysisException("InvalidInput", "need 0 < p_min < p_max, got p_min=%r p_max=%r" % (p_min, p_max))
    if n_periods < 2:
        raise AnalysisException("InvalidInput", "n_periods must be at least 2, got %d" % n_periods)
    if p_min < 2.0 * bin_s:
        raise AnalysisException(
            "InvalidInput", "p_min = %g s is below the Nyquist limit 2 * bin_s = %g s of the light curve"
            % (p_min, 2.0 * bin_s))
    n = len(counts)
    if n > MAX_BINS:
        raise AnalysisException("InvalidInput", "%d bins is more than the limit of %d" % (n, MAX_BINS))
    total = sum(counts)
    if n == 0 or total <= 0:
        raise AnalysisException("NoData", "the light curve of observation %s has no counts" % (obs_id,))
    duration = n * bin_s
    mean = total / n
    ys = [c - mean for c in counts]
    norm = 2.0 / total

    n_pad = 1
    while n_pad < OVERSAMPLE * n:
        n_pad <<= 1
    a = [complex(y) for y in ys] + [0j] * (n_pad - n)
    fft(a)
    df = 1.0 / (n_pad * bin_s)

    f_lo, f_hi = 1.0 / p_max, 1.0 / p_min
    j_lo, j_hi = int(math.ceil(f_lo / df)), int(math.floor(f_hi / df))
    power = {}

    def fft_power(j):
        if j not in power:
            z = a[j]
            power[j] = norm * (z.real * z.real + z.imag * z.imag)
        return power[j]

    # Max-pool the oversampled spectrum into the cells of the requested grid.
    step = (f_hi - f_lo) / (n_periods - 1)
    grid_f, grid_p = [], []
    for i in range(n_periods):
        g = f_lo + i * step
        lo, hi = max(f_lo, g - 0.5 * step), min(f_hi, g + 0.5 * step)
        js = range(int(math.ceil(lo / df)), int(math.floor(hi / df)) + 1)
        if len(js) == 0:  # cell narrower than the FFT spacing: nearest FFT frequency
            js = [min(max(int(round(g / df)), 0), n_pad // 2)]
        grid_f.append(g)
        grid_p.append(max(fft_power(j) for j in js))

    # Refine the highest peak of the spectrum within [f_lo, f_hi].
    if j_lo <= j_hi:
        j_best = max(range(j_lo, j_hi + 1), key=lambda j: (fft_power(j), -j))
        f0 = j_best * df
    else:
        f0 = grid_f[max(range(n_periods), key=lambda i: (grid_p[i], -i))]
    h = df / REFINE_STEPS
    fs = [f0 + k * h for k in range(-REFINE_STEPS, REFINE_STEPS + 1)]
    fs = [f for f in fs if f_lo <= f <= f_hi] or [f0]
    ps = [dft_power(ys, bin_s, f, norm) for f in fs]
    k = max(range(len(fs)), key=lambda i: (ps[i], -i))
    f_best, p_best = fs[k], ps[k]
    if 0 < k < len(fs) - 1:
        denom = ps[k - 1] - 2.0 * ps[k] + ps[k + 1]
        if denom < 0:
            f_new = fs[k] + 0.5 * (ps[k - 1] - ps[k + 1]) / denom * h
            p_new = dft_power(ys, bin_s, f_new, norm)
            if p_new >= p_best:
                f_best, p_best = f_new, p_new
    best_period = 1.0 / f_best

    # False-alarm probability of the highest peak for pure Poisson noise, with
    # (f_hi - f_lo) * T independent trial frequencies.
    n_trials = max(1.0, (f_hi - f_lo) * duration)
    single = math.exp(-0.5 * p_best)
    fap = 1.0 if single >= 1.0 else -math.expm1(n_trials * math.log1p(-single))

    order = list(range(n_periods - 1, -1, -1))  # ascending periods
    return {
        "obs_id": obs_id,
        "method": "leahy-normalised fourier power (fft, %dx oversampled), max-pooled on a grid uniform in frequency"
                  % OVERSAMPLE,
        "p_min": p_min,
        "p_max": p_max,
        "n_periods": n_periods,
        "periods": [round(1.0 / grid_f[i], 9) + 0.0 for i in order],
        "power": [round(grid_p[i], 6) + 0.0 for i in order],
        "best_period": round(best_period, 9) + 0.0,
        "best_power": round(p_best, 6) + 0.0,
        "period_resolution": round(best_period * best_period / duration, 9) + 0.0,
        "false_alarm_probability": float("%.6g" % fap) + 0.0,
        "n_counts": int(round(total)),
        "duration": round(duration, 6) + 0.0,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lightcurve", required=True, help="path of the light curve (JSON)")
    p.add_argument("--p-min", type=float, default=2.0, help="shortest trial period, s")
    p.add_argument("--p-max", type=float, default=20.0, help="longest trial period, s")
    p.add_argument("--n-periods", type=int, default=400, help="number of grid points")
    p.add_argument("--out", default="periodogram.json")
    args = p.parse_args(argv)
    try:
        result = periodogram(*load_lightcurve(args.lightcurve), p_min=args.p_min,
                             p_max=args.p_max, n_periods=args.n_periods)
    except AnalysisException as e:
        write_json(EXCEPTION_FILE, {"kind": e.kind, "message": e.message})
        print("%s: %s" % (e.kind, e.message), file=sys.stderr)
        return 1
    write_json(args.out, result)
    print("obs %s: best period %.6f s (power %.1f, false-alarm probability %.3g)" % (
        result["obs_id"], result["best_period"], result["best_power"], result["false_alarm_probability"]),
        file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
