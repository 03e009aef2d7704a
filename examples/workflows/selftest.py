#!/usr/bin/env python3
"""Self-test of the example workflows: runs the whole pipeline locally, as a worker would.

For each step it reads the workflow's oda-workflow.toml, fills in input defaults,
checks bounds, expands the argv template the way the node does ({bundle}, blob
inputs as file paths, list inputs as one argument per item, floats as Rust's
Display prints them) and runs it without a shell, with a fresh temporary working
directory as cwd. Then it checks the outputs:

  * three observations of a 7.3 s pulsar: every per-observation period and the
    combined best period are within 1% of 7.3 s;
  * the same expression gives the same bytes twice;
  * an empty event list (rate 0) makes `lightcurve` raise a NoData analysis
    exception (oda-exception.json, non-zero exit, no output);
  * `best_period` raises NoData for an empty list and GridMismatch for
    periodograms on different grids.

Usage: python3 examples/workflows/selftest.py   (standard library only, Python 3.9+)
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST_FILE = "oda-workflow.toml"
TRUE_PERIOD = 7.3
OBS_IDS = (0, 1, 2)
TOLERANCE = 0.01

try:
    import tomllib as _toml  # Python 3.11+
except ImportError:  # pragma: no cover - depends on the interpreter
    _toml = None


def parse_toml_subset(text):
    """Enough TOML for these manifests: [a.b] headers and one-line `key = value`
    pairs whose values are JSON-compatible (strings, numbers, booleans, arrays)."""
    root, table = {}, None
    table = root
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            table = root
            for part in line[1:-1].strip().split("."):
                table = table.setdefault(part.strip(), {})
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError("line %d: cannot parse %r" % (lineno, raw))
        table[key.strip()] = json.loads(value.strip())
    return root


def load_manifest(name):
    with open(os.path.join(HERE, name, MANIFEST_FILE), "r", encoding="utf-8") as f:
        text = f.read()
    manifest = _toml.loads(text) if _toml else parse_toml_subset(text)
    assert manifest["name"] == name, manifest["name"]
    assert manifest["executor"]["kind"] == "command"
    for f in manifest.get("files", []):
        assert os.path.isfile(os.path.join(HERE, name, f)), "%s: bundled file %s is missing" % (name, f)
    return manifest


def render_float(x):
    """Rust's `Display` for f64: shortest round-trip digits, never an exponent, no trailing `.0`."""
    s = format(Decimal(repr(float(x))), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def render(spec_type, value):
    if spec_type in ("blob", "output", "string"):
        return str(value)
    if spec_type == "int":
        return str(int(value))
    if spec_type == "float":
        return render_float(value)
    if spec_type == "bool":
        return "true" if value else "false"
    raise ValueError("cannot render type %r" % spec_type)


def check_arg(name, spec, value):
    ty = spec["type"]
    items = value if ty == "list" else [value]
    item_ty = spec.get("items") if ty == "list" else ty
    for v in items:
        if item_ty in ("int", "float"):
            if "min" in spec:
                assert v >= spec["min"], "%s = %r is below min %r" % (name, v, spec["min"])
            if "max" in spec:
                assert v <= spec["max"], "%s = %r is above max %r" % (name, v, spec["max"])
        if item_ty == "int":
            assert isinstance(v, int) and not isinstance(v, bool), "%s must be an int" % name


def expand_argv(manifest, args, bundle, workdir):
    inputs = manifest.get("inputs", {})
    unknown = set(args) - set(inputs)
    assert not unknown, "unknown arguments %s" % sorted(unknown)
    values = {}
    for name, spec in inputs.items():
        if name in args:
            values[name] = args[name]
        elif "default" in spec:
            values[name] = spec["default"]
        else:
            raise AssertionError("input %s is required" % name)
        check_arg(name, spec, values[name])

    def one(arg):
        out, i = [], 0
        while i < len(arg):
            c = arg[i]
            if arg.startswith("{{", i) or arg.startswith("}}", i):
                out.append(c)
                i += 2
            elif c == "{":
                end = arg.index("}", i)
                name = arg[i + 1:end]
                if name == "bundle":
                    out.append(bundle)
                elif name == "workdir":
                    out.append(workdir)
                else:
                    out.append(render(inputs[name]["type"], values[name]))
                i = end + 1
            else:
                out.append(c)
                i += 1
        return "".join(out)

    argv = []
    for arg in manifest["executor"]["argv"]:
        name = arg[1:-1] if arg.startswith("{") and arg.endswith("}") and arg.count("{") == 1 else None
        if name in inputs and inputs[name]["type"] == "list":
            argv.extend(render(inputs[name]["items"], v) for v in values[name])
        else:
            argv.append(one(arg))
    return argv


class Run(object):
    def __init__(self, name, rc, seconds, workdir, outputs, exception, stderr):
        self.name, self.rc, self.seconds, self.workdir = name, rc, seconds, workdir
        self.outputs, self.exception, self.stderr = outputs, exception, stderr


def run_workflow(name, args, parent):
    manifest = load_manifest(name)
    bundle = os.path.join(HERE, name)
    workdir = tempfile.mkdtemp(prefix=name + "-", dir=parent)
    argv = expand_argv(manifest, args, bundle, workdir)
    if argv[0] == "python3":
        argv[0] = sys.executable  # test the interpreter running this script
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=manifest.get("timeout_secs", 3600))
    seconds = time.perf_counter() - t0
    outputs = {}
    for out_name, spec in manifest["outputs"].items():
        path = os.path.join(workdir, spec["path"])
        if os.path.exists(path):
            outputs[out_name] = path
    exception = None
    exc_path = os.path.join(workdir, "oda-exception.json")
    if os.path.exists(exc_path):
        with open(exc_path, "r", encoding="utf-8") as f:
            exception = json.load(f)
    run = Run(name, proc.returncode, seconds, workdir, outputs, exception, proc.stderr)
    if proc.returncode == 0:
        assert exception is None, "%s: exit 0 but wrote oda-exception.json" % name
        assert set(outputs) == set(manifest["outputs"]), "%s: missing outputs: %s" % (name, proc.stderr)
        declared = sorted(spec["path"] for spec in manifest["outputs"].values())
        assert sorted(os.listdir(workdir)) == declared, \
            "%s: stray files %s" % (name, sorted(os.listdir(workdir)))
    return run


def load(path):
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def close(p, truth=TRUE_PERIOD, tol=TOLERANCE):
    return abs(p - truth) <= tol * truth


def main():
    timings = {}

    def timed(run):
        timings.setdefault(run.name, []).append(run.seconds)
        return run

    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="oda-examples-") as tmp:
        event_files, lightcurves, periodograms = [], [], []
        for obs in OBS_IDS:
            ev = timed(run_workflow("events", {"obs_id": obs}, tmp))
            assert ev.rc == 0, ev.stderr
            events = load(ev.outputs["events"])
            times = events["times"]
            assert events["obs_id"] == obs and events["n_events"] == len(times)
            assert 8000 < len(times) < 12000, len(times)
            assert times == sorted(times)
            assert all(events["t_start"] <= t <= events["t_stop"] for t in times)
            event_files.append(ev.outputs["events"])

            lc = timed(run_workflow("lightcurve", {"events": ev.outputs["events"]}, tmp))
            assert lc.rc == 0, lc.stderr
            curve = load(lc.outputs["lightcurve"])
            assert curve["n_bins"] == len(curve["counts"]) == len(curve["bin_start"]) == 4000
            assert sum(curve["counts"]) == curve["n_events"] <= len(times)
            lightcurves.append(lc.outputs["lightcurve"])

            pg = timed(run_workflow("periodogram", {"lightcurve": lc.outputs["lightcurve"]}, tmp))
            assert pg.rc == 0, pg.stderr
            gram = load(pg.outputs["periodogram"])
            assert len(gram["periods"]) == len(gram["power"]) == 400
            assert gram["periods"] == sorted(gram["periods"])
            assert close(gram["best_period"]), gram["best_period"]
            print("obs %d: %5d events, best period %.6f s (power %.0f)" % (
                obs, len(times), gram["best_period"], gram["best_power"]))
            periodograms.append(pg.outputs["periodogram"])

        bp = timed(run_workflow("best_period", {"periodograms": periodograms}, tmp))
        assert bp.rc == 0, bp.stderr
        result = load(bp.outputs["result"])
        assert result["n_obs"] == len(OBS_IDS)
        assert [o["obs_id"] for o in result["per_observation"]] == list(OBS_IDS)
        assert close(result["best_period"]), result["best_period"]
        assert result["refined_period"] is not None and close(result["refined_period"])
        print("combined: best period %.6f s (grid half-step %.4f s), refined %.6f s from %d/%d observations"
              % (result["best_period"], result["best_period_half_step"], result["refined_period"],
                 result["n_agree"], result["n_obs"]))

        # Determinism: the same expression gives the same bytes; another obs_id does not.
        again = run_workflow("events", {"obs_id": OBS_IDS[0]}, tmp)
        blobs = [read_bytes(p) for p in event_files]
        assert read_bytes(again.outputs["events"]) == blobs[0], "a repeated run changed its output bytes"
        assert len(set(blobs)) == len(blobs), "two observations gave the same event list"
        bp2 = run_workflow("best_period", {"periodograms": periodograms}, tmp)
        assert read_bytes(bp2.outputs["result"]) == read_bytes(bp.outputs["result"])

        # Analysis exception: an observation without events.
        empty = run_workflow("events", {"obs_id": 7, "rate": 0.0}, tmp)
        assert empty.rc == 0 and load(empty.outputs["events"])["times"] == []
        lc = run_workflow("lightcurve", {"events": empty.outputs["events"]}, tmp)
        assert lc.rc != 0, "lightcurve accepted an empty event list"
        assert lc.exception is not None and lc.exception["kind"] == "NoData", lc.exception
        assert sorted(lc.exception) == ["kind", "message"] and lc.exception["message"]
        assert not lc.outputs, "lightcurve wrote an output despite the exception"
        print("empty event list: lightcurve exit %d, exception %s" % (lc.rc, json.dumps(lc.exception, sort_keys=True)))

        none = run_workflow("best_period", {"periodograms": []}, tmp)
        assert none.rc != 0 and none.exception["kind"] == "NoData", none.exception

        other = run_workflow("periodogram", {"lightcurve": lightcurves[0], "n_periods": 300}, tmp)
        assert other.rc == 0, other.stderr
        mixed = run_workflow("best_period", {"periodograms": periodograms + [other.outputs["periodogram"]]}, tmp)
        assert mixed.rc != 0 and mixed.exception["kind"] == "GridMismatch", mixed.exception

    total = time.perf_counter() - t_all
    for name in ("events", "lightcurve", "periodogram", "best_period"):
        ts = timings[name]
        print("%-12s %d run(s), %.3f s max (process start included)" % (name, len(ts), max(ts)))
    print("selftest passed in %.2f s (python %s)" % (total, sys.version.split()[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
