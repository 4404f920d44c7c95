import pytest

from pipeline.core.manifest import ManifestError, parse_release
from pipeline.core.plan import SourceIndex, plan_release
from pipeline.sources import SourceItem


def test_one_unit_per_shard(tiny_release):
    plan = plan_release(parse_release(tiny_release))
    # 5 items in shards of 2 -> 3 slices; 2 corruptions x 2 severities -> 4 configs
    assert len(plan.units) == 12
    assert [(u.start, u.stop) for u in plan.units[:3]] == [(0, 2), (2, 4), (4, 5)]
    assert plan.units[0].shard_id == "gaussian_noise-1/test-00000"
    assert len({u.fingerprint for u in plan.units}) == 12


def test_fingerprint_depends_on_inputs(tiny_release):
    base = {u.shard_id: u.fingerprint for u in plan_release(parse_release(tiny_release)).units}
    tiny_release["seed"] = 8
    reseeded = {u.shard_id: u.fingerprint for u in plan_release(parse_release(tiny_release)).units}
    assert set(base) == set(reseeded) and all(base[k] != reseeded[k] for k in base)

    tiny_release["seed"] = 7
    tiny_release["source"]["count"] = 6  # one more item changes only the last slice
    grown = {u.shard_id: u.fingerprint for u in plan_release(parse_release(tiny_release)).units}
    changed = sorted(k for k in base if base[k] != grown[k])
    assert changed == [f"{c}/test-00002" for c in ("contrast-1", "contrast-5", "gaussian_noise-1", "gaussian_noise-5")]


def test_duplicate_keys_rejected():
    with pytest.raises(ManifestError, match="twice"):
        SourceIndex.from_items([SourceItem("a", "1"), SourceItem("a", "2")])


def test_duplicate_configs_rejected(tiny_release):
    tiny_release["shifts"].append(dict(tiny_release["shifts"][0]))
    with pytest.raises(ManifestError, match="already produced by shifts.0"):
        plan_release(parse_release(tiny_release))


def test_units_carry_an_affinity_only_for_stages_that_share_work(tiny_release, monkeypatch):
    from pipeline.core.manifest import parse_release as parse
    from pipeline.core.plan import plan_release as plan
    from stages.corruptions import CorruptionStage
    from stages.nuisance import NuisanceStage

    assert NuisanceStage.shares_work_across_variants is True
    assert all(u.affinity is None for u in plan(parse(tiny_release)).units)
    monkeypatch.setattr(CorruptionStage, "shares_work_across_variants", True)
    units = plan(parse(tiny_release)).units
    assert {u.affinity for u in units} == {"0:0", "0:2", "0:4"}            # one group per slice
    assert all(u.affinity == f"{u.stage_index}:{u.start}" for u in units)
