"""``hasher_assets.metadata``: each partition of a range run gets its own metadata, with one check of
the keys per run instead of Dagster's listing of every partition per key."""

import dagster as dg

from hasher_assets.metadata import add_partition_metadata
from hasher_assets.partitions import RANGE_END_TAG, RANGE_START_TAG

PARTS = dg.DynamicPartitionsDefinition(name="meta_parts")
KEYS = ["p1", "p2", "p3"]


def run(asset: dg.AssetsDefinition) -> tuple[dg.ExecuteInProcessResult, int]:
    """A range run of ``asset`` over KEYS and how many times it listed the dynamic partitions."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PARTS.name, KEYS)
        calls = []
        listed = instance.get_dynamic_partitions
        instance.get_dynamic_partitions = lambda *a, **k: calls.append(1) or listed(*a, **k)
        result = dg.materialize(
            [asset],
            instance=instance,
            tags={RANGE_START_TAG: KEYS[0], RANGE_END_TAG: KEYS[-1]},
            raise_on_error=False,
        )
        return result, len(calls)


def test_each_partition_gets_its_own_metadata_with_the_keys_listed_once_per_run():
    @dg.asset(partitions_def=PARTS)
    def each(context: dg.AssetExecutionContext) -> None:
        add_partition_metadata(context, {k: {"rows": i} for i, k in enumerate(context.partition_keys)})

    result, listings = run(each)
    assert result.success
    found = {m.partition: m.metadata["rows"].value for m in result.asset_materializations_for_node("each")}
    assert found == {"p1": 0, "p2": 1, "p3": 2}

    @dg.asset(partitions_def=PARTS, name="each")
    def keys_only(context: dg.AssetExecutionContext) -> None:
        assert list(context.partition_keys) == KEYS

    _, baseline = run(keys_only)
    # One check of the keys per run (context.partition_keys), not Dagster's listing per key.
    assert listings == baseline + 1


def test_metadata_for_a_partition_the_run_does_not_materialise_is_refused():
    @dg.asset(partitions_def=PARTS)
    def stray(context: dg.AssetExecutionContext) -> None:
        add_partition_metadata(context, {"p1": {"rows": 1}, "elsewhere": {"rows": 2}})

    result, _ = run(stray)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "partitions this run does not materialise: elsewhere" in str(failure.step_failure_data.error)


def test_without_the_accumulator_it_falls_back_to_add_asset_metadata(monkeypatch):
    import hasher_assets.metadata as metadata

    monkeypatch.setattr(metadata, "_step_with_accumulator", lambda context: None)

    @dg.asset(partitions_def=PARTS)
    def fallback(context: dg.AssetExecutionContext) -> None:
        add_partition_metadata(context, {k: {"key": k} for k in context.partition_keys})

    result, listings = run(fallback)
    assert result.success
    found = {m.partition: m.metadata["key"].value for m in result.asset_materializations_for_node("fallback")}
    assert found == {k: k for k in KEYS}
    assert listings >= len(KEYS)  # Dagster's own check lists the partitions for each key
