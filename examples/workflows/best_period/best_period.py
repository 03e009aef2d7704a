#!/usr/bin/env python3
"""Combine the periodograms of several observations (from the `periodogram` workflow) into one best period.

Every periodogram must be on the same period grid (same p_min, p_max,
n_periods). Each is normalised by its median power (a robust estimate of its
noise level, so that long and short observations weigh alike), the normalised
powers are summed grid point by grid point, and the grid period of the highest
summed power is the combined best period. Its precision is limited by the grid
spacing, so the result also gives `refined_period`: the mean of the refined
per-observation best periods that lie within one grid step (in frequency) of
it, and how many did (`n_agree`).

An empty list is an analysis exception of kind "NoData"; periodograms on
different grids are kind "GridMismatch".

Standard library only; Python 3.9+.
"""

import argparse
import json
import math
import os
import sys

EXCEPTION_FILE = "oda-exception.json"


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


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def load_periodogram(index, path):
    what = "periodogram %d (%s)" % (index, os.path.basename(path))
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise AnalysisException("InvalidInput", "cannot read %s: %s" % (what, e))
    if not isinstance(data, dict):
        raise AnalysisException("InvalidInput", "%s is not a JSON object" % what)
    periods, power = data.get("periods"), data.get("power")
    if (not isinstance(periods, list) or not isinstance(power, list) or len(periods) != len(power)
            or len(periods) < 2 or not all(is_number(p) and p > 0 for p in periods)
            or not all(is_number(p) and p >= 0 for p in power)):
        raise AnalysisException("InvalidInput", "%s: periods and power must be equal-length lists of numbers" % what)
    if not is_number(data.get("best_period")) or data["best_period"] <= 0:
        raise AnalysisException("InvalidInput", "%s: best_period is missing" % what)
    return data


def median(xs):
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else 0.5 * (s[m - 1] + s[m])


def combine(paths):
    if not paths:
        raise AnalysisException("NoData", "no periodograms to combine")
    pgs = [load_periodogram(i, p) for i, p in enumerate(paths)]
    periods = pgs[0]["periods"]
    for i, pg in enumerate(pgs[1:], start=1):
        if pg["periods"] != periods:
            raise AnalysisException(
                "GridMismatch", "periodogram %d is not on the period grid of periodogram 0 "
                "(run every periodogram with the same p_min, p_max and n_periods)" % i)
    combined = [0.0] * len(periods)
    for pg in pgs:
        level = median(pg["power"])
        if level <= 0:
            level = sum(pg["power"]) / len(pg["power"])
        if level <= 0:
            continue  # a flat, all-zero periodogram adds nothing
        for k, p in enumerate(pg["power"]):
            combined[k] += p / level
    k_best = max(range(len(periods)), key=lambda k: (combined[k], -k))
    best = periods[k_best]

    # One grid step in frequency (the grid of `periodogram` is uniform in frequency).
    step = abs(1.0 / periods[0] - 1.0 / periods[-1]) / (len(periods) - 1)
    agree = [pg["best_period"] for pg in pgs if abs(1.0 / pg["best_period"] - 1.0 / best) <= step]
    refined = sum(agree) / len(agree) if agree else None

    per_obs = []
    for pg in pgs:
        entry = {"obs_id": pg.get("obs_id"), "best_period": pg["best_period"]}
        for key in ("best_power", "false_alarm_probability", "period_resolution"):
            if is_number(pg.get(key)):
                entry[key] = pg[key]
        per_obs.append(entry)
    return {
        "best_period": best,
        "best_period_half_step": round(0.5 * step * best * best, 9) + 0.0,
        "refined_period": None if refined is None else round(refined, 9) + 0.0,
        "n_agree": len(agree),
        "n_obs": len(pgs),
        "per_observation": per_obs,
        "periods": periods,
        "combined_power": [round(c, 6) + 0.0 for c in combined],
        "normalisation": "each periodogram divided by its median power, then summed",
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="result.json")
    p.add_argument("periodograms", nargs="*", help="paths of periodogram files (JSON)")
    args = p.parse_args(argv)
    try:
        result = combine(args.periodograms)
    except AnalysisException as e:
        write_json(EXCEPTION_FILE, {"kind": e.kind, "message": e.message})
        print("%s: %s" % (e.kind, e.message), file=sys.stderr)
        return 1
    write_json(args.out, result)
    print("%d observations: best period %.6f s (refined %s s, %d agree)" % (
        result["n_obs"], result["best_period"], result["refined_period"], result["n_agree"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
