#!/usr/bin/env python3
"""Simulate the photon arrival times of one observation of a periodic X-ray source.

The source count rate is a sinusoidally modulated Poisson process,

    lambda(t) = rate * (1 + pulsed_fraction * sin(2 pi t / period)),

sampled by thinning: candidate arrivals are drawn from a homogeneous Poisson
process of rate lambda_max = rate * (1 + pulsed_fraction) and each is kept with
probability lambda(t) / lambda_max. Observation `obs_id` starts at
t = obs_id * 86400 s (one observation a day) and the pulse phase is coherent
across observations (phase zero at t = 0).

The random generator is seeded from SHA-256(seed, obs_id), so a given
(seed, obs_id, parameters) always gives the same file, byte for byte.

Standard library only; Python 3.9+.
"""

import argparse
import hashlib
import json
import math
import os
import random
import sys

EXCEPTION_FILE = "oda-exception.json"
OBS_SPACING_S = 86400.0
# Refuse parameters that would produce a huge event list (the mean count is rate * duration).
MAX_EXPECTED_EVENTS = 100000


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


def rng_seed(seed, obs_id):
    digest = hashlib.sha256(("oda-example-events:%d:%d" % (seed, obs_id)).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big")


def simulate(obs_id, period, duration, rate, pulsed_fraction, seed):
    for name, value in (("period", period), ("duration", duration), ("rate", rate),
                        ("pulsed_fraction", pulsed_fraction)):
        if not math.isfinite(value):
            raise AnalysisException("InvalidInput", "%s must be finite, got %r" % (name, value))
    if obs_id < 0:
        raise AnalysisException("InvalidInput", "obs_id must be >= 0, got %d" % obs_id)
    if period <= 0 or duration <= 0:
        raise AnalysisException("InvalidInput", "period and duration must be positive")
    if rate < 0:
        raise AnalysisException("InvalidInput", "rate must be >= 0, got %r" % rate)
    if not 0.0 <= pulsed_fraction <= 1.0:
        raise AnalysisException("InvalidInput", "pulsed_fraction must be in [0, 1], got %r" % pulsed_fraction)
    if rate * duration > MAX_EXPECTED_EVENTS:
        raise AnalysisException(
            "InvalidInput",
            "rate * duration = %g expected events, more than the limit of %d"
            % (rate * duration, MAX_EXPECTED_EVENTS))

    rng = random.Random(rng_seed(seed, obs_id))
    t_start = obs_id * OBS_SPACING_S
    t_stop = t_start + duration
    times = []
    if rate > 0:
        lam_max = rate * (1.0 + pulsed_fraction)
        omega = 2.0 * math.pi / period
        t = t_start
        while True:
            t += rng.expovariate(lam_max)
            if t >= t_stop:
                break
            lam = rate * (1.0 + pulsed_fraction * math.sin(omega * t))
            if rng.random() * lam_max < lam:
                times.append(round(t, 6) + 0.0)
    return {
        "obs_id": obs_id,
        "t_start": round(t_start, 6) + 0.0,
        "t_stop": round(t_stop, 6) + 0.0,
        "n_events": len(times),
        "times": times,
        "simulation": {
            "period": period,
            "pulsed_fraction": pulsed_fraction,
            "rate": rate,
            "seed": seed,
        },
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--obs-id", type=int, required=True)
    p.add_argument("--period", type=float, default=7.3, help="pulse period, s")
    p.add_argument("--duration", type=float, default=2000.0, help="exposure, s")
    p.add_argument("--rate", type=float, default=5.0, help="mean count rate, counts/s")
    p.add_argument("--pulsed-fraction", type=float, default=0.6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="events.json")
    args = p.parse_args(argv)
    try:
        result = simulate(args.obs_id, args.period, args.duration, args.rate,
                          args.pulsed_fraction, args.seed)
    except AnalysisException as e:
        write_json(EXCEPTION_FILE, {"kind": e.kind, "message": e.message})
        print("%s: %s" % (e.kind, e.message), file=sys.stderr)
        return 1
    write_json(args.out, result)
    print("obs %d: %d events in [%.1f, %.1f) s" % (
        result["obs_id"], result["n_events"], result["t_start"], result["t_stop"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
