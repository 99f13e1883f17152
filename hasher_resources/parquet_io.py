"""The Parquet IO manager: one file per asset partition, written atomically, loaded lazily.

Assets hand over either a table (``pa.Table`` or ``pl.DataFrame``) or a :class:`StagedParquet`,
a finished file their streaming writer produced; either way the file lands at
``<base_dir>/<asset>/<partition>.parquet`` with one ``os.replace``, so a reader never sees half a
file. A run over a range of partitions hands over ``{partition: table or StagedParquet}``: one file
each (their metadata is the asset's, per partition). Downstream assets receive a
:class:`ParquetPartition` handle and stream record batches from it instead of loading a partition
whole; an unpartitioned asset, or a run over a range, gets ``{partition: handle}`` for every
partition that exists on disk.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from .files import atomic_write, default_data_dir, move_into_place

#: Parquet key-value metadata key under which assets store JSON facts about a file.
HASHER_METADATA_KEY = b"hasher"


@dataclass(frozen=True)
class StagedParquet:
    """A Parquet file an asset already wrote (e.g. by streaming); the IO manager moves it into place."""

    path: Path


@dataclass(frozen=True)
class ParquetPartition:
    """A lazy handle on one stored partition: nothing is read until asked."""

    path: Path
    partition_key: str | None = None

    def num_rows(self) -> int:
        return pq.ParquetFile(self.path).metadata.num_rows

    def schema(self) -> pa.Schema:
        return pq.read_schema(self.path)

    def hasher_metadata(self) -> dict:
        """The JSON facts an asset stored in the file's key-value metadata (empty if none)."""
        raw = (self.schema().metadata or {}).get(HASHER_METADATA_KEY)
        return json.loads(raw) if raw else {}

    def iter_batches(
        self, batch_rows: int = 65_536, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        yield from pq.ParquetFile(self.path).iter_batches(batch_size=batch_rows, columns=columns)

    def read(self, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path, columns=columns)

    def polars(self, columns: list[str] | None = None) -> pl.DataFrame:
        return pl.read_parquet(self.path, columns=columns)


def partition_path(base_dir: Path | str, asset: str | Sequence[str], partition_key: str | None) -> Path:
    """Where a stored partition lives: ``<base_dir>/<asset>/<partition>.parquet``, or
    ``<base_dir>/<asset>.parquet`` for an unpartitioned asset (``asset`` may be an asset key's path)."""
    parts = [asset] if isinstance(asset, str) else list(asset)
    folder = Path(base_dir).expanduser().joinpath(*parts)
    return folder.with_suffix(".parquet") if partition_key is None else folder / f"{partition_key}.parquet"


def write_table_atomic(table: pa.Table, path: Path, compression: str = "zstd") -> None:
    """Write ``table`` to ``path`` as Parquet, atomically (:func:`hasher_resources.files.atomic_write`)."""
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression=compression))


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores each asset partition as ``<base_dir>/<asset>/<partition>.parquet``."""

    base_dir: str = Field(
        default_factory=lambda: str(default_data_dir()), description="Root of all stored partitions"
    )
    compression: str = Field(default="zstd", description="Parquet compression of the stored partitions.")

    def _path(self, asset_key: dg.AssetKey, partition_key: str | None) -> Path:
        return partition_path(self.base_dir, asset_key.path, partition_key)

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if context.has_asset_partitions and len(context.asset_partition_keys) != 1:
            # A run over a range of partitions hands over {partition: value}: one file each.
            keys = set(context.asset_partition_keys)
            if not isinstance(obj, Mapping) or set(obj) != keys:
                got = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
                raise dg.DagsterInvariantViolationError(
                    f"{context.asset_key.to_user_string()} ran for {len(keys)} partitions and must return "
                    f"{{partition: table}} for exactly those; got {str(got)[:200]}"
                )
            for key, value in obj.items():
                self._store(context, self._path(context.asset_key, key), value)
            return
        key = context.asset_partition_key if context.has_asset_partitions else None
        path = self._path(context.asset_key, key)
        self._store(context, path, obj)
        meta = pq.ParquetFile(path).metadata
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(path)),
                "dagster/row_count": meta.num_rows,
                "size_bytes": path.stat().st_size,
            }
        )

    def _store(self, context: dg.OutputContext, path: Path, obj: object) -> None:
        if isinstance(obj, StagedParquet):
            move_into_place(obj.path, path)
        elif isinstance(obj, pl.DataFrame):
            write_table_atomic(obj.to_arrow(), path, self.compression)
        elif isinstance(obj, pa.Table):
            write_table_atomic(obj, path, self.compression)
        else:
            raise TypeError(
                f"ParquetIOManager cannot store {type(obj).__name__} for "
                f"{context.asset_key.to_user_string()}; "
                "return a pyarrow Table, a polars DataFrame or a StagedParquet"
            )

    def load_input(self, context: dg.InputContext) -> ParquetPartition | dict[str, ParquetPartition]:
        asset_key = context.asset_key
        name = asset_key.to_user_string()
        if not context.has_asset_partitions:
            path = self._path(asset_key, None)
            if not path.exists():
                raise FileNotFoundError(f"{name} has not been materialised: {path} is missing")
            return ParquetPartition(path)
        keys = context.asset_partition_keys
        # An unpartitioned consumer (deployment) fans in every partition; a partitioned one gets its own.
        wants_dict = not context.has_partition_key or len(keys) != 1
        if not wants_dict:
            path = self._path(asset_key, keys[0])
            if not path.exists():
                raise FileNotFoundError(
                    f"partition {keys[0]!r} of {name} has not been materialised: {path} is missing"
                )
            return ParquetPartition(path, keys[0])
        found = {k: ParquetPartition(self._path(asset_key, k), k) for k in keys}
        missing = sorted(k for k, p in found.items() if not p.path.exists())
        if missing:
            context.log.warning(
                f"{len(missing)} registered partition(s) of {name} are not materialised yet, so this run "
                f"leaves them out (materialise them to include them): "
                + ", ".join(missing[:10])
                + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            )
        return {k: p for k, p in found.items() if p.path.exists()}
