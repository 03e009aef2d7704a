#!/usr/bin/env python3
"""Write the golden wire encodings (../tests/golden/vectors.toml) and the golden
manifests into corpus/<target>/ as starting inputs for cargo-fuzz. Needs Python 3.11+
(tomllib). Run from protocol/fuzz/."""

import pathlib
import tomllib

HERE = pathlib.Path(__file__).resolve().parent
GOLDEN = HERE.parent / "tests" / "golden"

# Prefix of a name in the [wire] section -> fuzz target.
TARGETS = [
    ("gossip_", "gossip"),
    ("job_request_", "job_request"),
    ("job_response_", "job_response"),
    ("fact_request_", "fact_request"),
    ("fact_response_", "fact_response"),
    ("blob_request", "blob_request"),
    ("blob_response_", "blob_response"),
    ("signed_fact", "signed_fact"),
    ("signed_endorsement_", "endorsement"),
    ("signed_dispute", "dispute"),
    ("signed_job_token_", "job_token"),
    ("signed_group_roster", "roster"),
    ("workflow_bundle_", "bundle"),
    ("workflow_", "workflow"),
    ("expr_", "expression"),
]


def write(target: str, name: str, data: bytes) -> None:
    folder = HERE / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def main() -> None:
    vectors = tomllib.loads((GOLDEN / "vectors.toml").read_text())
    for name, hexdata in vectors["wire"].items():
        target = next((t for prefix, t in TARGETS if name.startswith(prefix)), None)
        if target is None:
            raise SystemExit(f"no fuzz target for golden vector {name}")
        write(target, name, bytes.fromhex(hexdata))
    for manifest in GOLDEN.glob("*/manifest.toml"):
        write("manifest_toml", manifest.parent.name, manifest.read_bytes())
    for section in ("ids", "public_keys"):
        for name, text in vectors[section].items():
            write("id_text", f"{section}_{name}", text.encode())
    print(f"wrote {HERE / 'corpus'}")


if __name__ == "__main__":
    main()
