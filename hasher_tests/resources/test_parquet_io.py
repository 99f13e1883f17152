"""The Parquet IO manager: one file per partition, atomic writes, lazy handles, fan-in."""

from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hasher_resources.parquet_io import (
    ParquetIOManager,
    ParquetPartition,
    StagedParquet,
    write_table_atomic,
)

parts = dg.DynamicPartitionsDefinition(name="parts")


@dg.asset(partitions_def=parts, io_manager_key="pq")
def numbers(context: dg.AssetExecutionContext) -> pa.Table:
    return pa.table({"key": [context.partition_key] * 3, "x": [1, 2, 3]})


@dg.asset(partitions_def=parts, io_manager_key="pq")
def doubled(numbers: ParquetPartition) -> pl.DataFrame:
    return numbers.polars().with_columns(pl.col("x") * 2)


@dg.asset(io_manager_key="pq")
def gathered(doubled: dict[str, ParquetPartition]) -> pa.Table:
    return pa.table({"key": sorted(doubled), "rows": [doubled[k].num_rows() for k in sorted(doubled)]})


def _run(instance, base: Path, selection, key=None):
    return dg.materialize(
        [numbers, doubled, gathered],
        selection=selection,
        partition_key=key,
        instance=instance,
        resources={"pq": ParquetIOManager(base_dir=str(base))},
    )


def test_each_partition_is_one_parquet_file_and_downstream_gets_a_lazy_handle(tmp_path, instance):
    instance.add_dynamic_partitions("parts", ["a", "b"])
    for key in ("a", "b"):
        assert _run(instance, tmp_path, ["numbers", "doubled"], key).success
    assert pq.read_table(tmp_path / "doubled" / "a.parquet").column("x").to_pylist() == [2, 4, 6]
    result = _run(instance, tmp_path, ["gathered"])
    assert result.success
    assert pq.read_table(tmp_path / "gathered.parquet").to_pydict() == {"key": ["a", "b"], "rows": [3, 3]}
    meta = result.asset_materializations_for_node("gathered")[0].metadata
    assert meta["dagster/row_count"].value == 2


def test_staged_file_is_moved_into_place(tmp_path, instance):
    staged = tmp_path / "staged.parquet"
    pq.write_table(pa.table({"v": [7]}), staged)

    @dg.asset(io_manager_key="pq")
    def staged_asset() -> StagedParquet:
        return StagedParquet(staged)

    result = dg.materialize(
        [staged_asset], instance=instance, resources={"pq": ParquetIOManager(base_dir=str(tmp_path))}
    )
    assert result.success
    assert not staged.exists()
    assert pq.read_table(tmp_path / "staged_asset.parquet").column("v").to_pylist() == [7]


def test_missing_upstream_partition_names_the_path(tmp_path, instance):
    instance.add_dynamic_partitions("parts", ["never"])
    result = dg.materialize(
        [numbers.to_source_asset(), doubled],
        partition_key="never",
        instance=instance,
        resources={"pq": ParquetIOManager(base_dir=str(tmp_path))},
        raise_on_error=False,
    )
    assert not result.success
    text = str(result.all_events)
    assert "has not been materialised" in text and "never.parquet" in text


def test_failed_atomic_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "t.parquet"
    write_table_atomic(pa.table({"x": [1]}), path)
    before = path.read_bytes()
    with pytest.raises(pa.ArrowException):
        write_table_atomic(pa.table({"x": [1]}), path, compression="no-such-codec")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_unsupported_output_type_is_a_clear_error(tmp_path, instance):
    @dg.asset(io_manager_key="pq")
    def wrong() -> dict:
        return {"x": 1}

    result = dg.materialize(
        [wrong],
        instance=instance,
        resources={"pq": ParquetIOManager(base_dir=str(tmp_path))},
        raise_on_error=False,
    )
    assert not result.success
    assert "cannot store dict" in str(result.all_events)
