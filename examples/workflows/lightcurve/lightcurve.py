#!/usr/bin/env python3
"""Bin a photon event list (from the `events` workflow) into a light curve.

Bins of width bin_s start at t_start; only complete bins are kept, so a final
partial bin (and any event in it) is dropped. An event list with no events,
or with no events inside a complete bin, is an analysis exception of kind
"NoData": oda-exception.json is written to the working directory and the
script exits with status 1.

Standard library only; Python 3.9+.
"""

import argparse
import json
import math
import os
import sys

EXCEPTION_FILE = "oda-exception.json"
MAX_BINS = 100000


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


def number(data, key, what):
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise AnalysisException("InvalidInput", "%s: %r is not a finite number" % (what, key))
    return float(v)


def load_events(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise AnalysisException("InvalidInput", "cannot read the event list: %s" % e)
    if not isinstance(data, dict):
        raise AnalysisException("InvalidInput", "the event list is not a JSON object")
    t_start = number(data, "t_start", "event list")
    t_stop = number(data, "t_stop", "event list")
    times = data.get("times")
    if not isinstance(times, list):
        raise AnalysisException("InvalidInput", "event list: \"times\" is not a list")
    for t in times:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise AnalysisException("InvalidInput", "event list: time %r is not a finite number" % (t,))
    obs_id = data.get("obs_id")
    return obs_id, t_start, t_stop, times


def bin_events(obs_id, t_start, t_stop, times, bin_s):
    if not (math.isfinite(bin_s) and bin_s > 0):
        raise AnalysisException("InvalidInput", "bin_s must be a positive number, got %r" % bin_s)
    if not times:
        raise AnalysisException("NoData", "the event list of observation %s has no events" % (obs_id,))
    # The small tolerance keeps a bin that ends exactly at t_stop despite rounding.
    n_bins = int(math.floor((t_stop - t_start) / bin_s + 1e-9))
    if n_bins < 1:
        raise AnalysisException(
            "NoData", "observation %s lasts %g s, shorter than one %g s bin"
            % (obs_id, t_stop - t_start, bin_s))
    if n_bins > MAX_BINS:
        raise AnalysisException(
            "InvalidInput", "%d bins is more than the limit of %d; use a larger bin_s" % (n_bins, MAX_BINS))
    counts = [0] * n_bins
    for t in times:
        k = int(math.floor((t - t_start) / bin_s))
        if 0 <= k < n_bins:
            counts[k] += 1
    total = sum(counts)
    if total == 0:
        raise AnalysisException(
            "NoData", "none of the %d events of observation %s falls in a complete bin"
            % (len(times), obs_id))
    return {
        "obs_id": obs_id,
        "t_start": round(t_start, 6) + 0.0,
        "bin_s": bin_s,
        "n_bins": n_bins,
        "n_events": total,
        "bin_start": [round(t_start + i * bin_s, 6) + 0.0 for i in range(n_bins)],
        "counts": counts,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", required=True, help="path of the event list (JSON)")
    p.add_argument("--bin-s", type=float, default=0.5, help="bin width, s")
    p.add_argument("--out", default="lightcurve.json")
    args = p.parse_args(argv)
    try:
        result = bin_events(*load_events(args.events), bin_s=args.bin_s)
    except AnalysisException as e:
        write_json(EXCEPTION_FILE, {"kind": e.kind, "message": e.message})
        print("%s: %s" % (e.kind, e.message), file=sys.stderr)
        return 1
    write_json(args.out, result)
    print("obs %s: %d counts in %d bins of %g s" % (
        result["obs_id"], result["n_events"], result["n_bins"], result["bin_s"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
