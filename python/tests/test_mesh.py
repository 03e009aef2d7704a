"""The Python client against a real node: submit, wait, verified outputs,
chained steps, the cache, provenance, facts, and one exception per failure."""

from __future__ import annotations

import json

import blake3
import pytest

from oda_mesh import (
    AnalysisError,
    BadArgument,
    Mesh,
    NodeUnreachable,
    NotFound,
    Unauthorized,
)


def test_a_result_is_computed_and_its_outputs_are_verified(mesh, tmp_path):
    job = mesh.submit("events", obs_id=1, duration=200)
    assert job.expr.startswith("ex:")
    result = job.wait(timeout=120)
    assert not result.from_cache
    assert result.trusted, result.trust
    events = result.outputs["events"]
    data = events.read_bytes()
    assert f"bl:{blake3.blake3(data).hexdigest()}" == events.blob
    assert len(data) == events.size
    saved = events.save(tmp_path)
    assert saved == tmp_path / "events"
    assert saved.read_bytes() == data
    assert not (tmp_path / "events.part").exists()
    assert mesh.job(job.id).status == "done"
    assert isinstance(job.logs(), list)

    # The next step takes the output; asking again comes from the cache.
    lc = mesh.submit("lightcurve", events=events, bin_s=10).wait(timeout=120)
    curve = json.loads(lc.outputs["lightcurve"].read_text())
    assert curve["obs_id"] == 1 and curve["bin_s"] == 10.0
    again = mesh.submit("events", obs_id=1, duration=200).wait(timeout=60)
    assert again.from_cache
    assert again.outputs["events"].blob == events.blob

    # How it was made: two signed steps, and W3C PROV-O.
    prov = mesh.prov(lc.expr)
    assert [s["workflow_name"] for s in prov["steps"]] == ["lightcurve", "events"]
    assert prov["steps"][0]["inputs"][0]["argument"] == "events"
    assert "prov:wasAssociatedWith" in mesh.prov(lc.expr, format="turtle")
    facts = mesh.facts(lc.expr)
    assert facts and all(f["trusted"] for f in facts)


def test_each_failure_has_its_exception(mesh, node):
    with pytest.raises(BadArgument) as bad:
        mesh.submit("events", obs_id="x")
    assert bad.value.argument == "obs_id"
    with pytest.raises(BadArgument) as unknown:
        mesh.submit("events", obs_id=1, nonsense=3)
    assert unknown.value.argument == "nonsense"
    with pytest.raises(NotFound):
        mesh.submit("no-such-workflow")
    with pytest.raises(NotFound):
        mesh.job("00112233445566778899aabbccddeeff")

    # An observation without photons: the light curve reports NoData.
    empty = mesh.submit("events", obs_id=2, duration=100, rate=0).wait(timeout=120)
    with pytest.raises(AnalysisError) as analysis:
        mesh.submit("lightcurve", events=empty.outputs["events"]).wait(timeout=120)
    assert analysis.value.kind == "NoData"

    with pytest.raises(Unauthorized):
        Mesh(node, token="0" * 64).jobs()
    with pytest.raises(NodeUnreachable):
        Mesh(api="127.0.0.1:1", token="x").jobs()


def test_no_node_in_an_empty_data_dir(tmp_path):
    with pytest.raises(NodeUnreachable) as e:
        Mesh(tmp_path)
    assert "api.addr" in str(e.value)
