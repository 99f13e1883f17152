"""Materialisation metadata the stages share: Markdown previews, embedded plots, the latest metadata,
and the results of a run that materialises (or checks) several partitions at once."""

import base64
from collections.abc import Iterator, Mapping

import dagster as dg
import pyarrow as pa


def preview_markdown(table: pa.Table, columns: list[str], rows: int = 5, width: int = 80) -> str:
    """A small Markdown table of the first ``rows`` rows of ``columns``, long strings cut to ``width``."""
    head = table.select(columns).slice(0, rows).to_pylist()
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in head:
        cells = []
        for c in columns:
            text = str(row[c]).replace("\n", " ").replace("|", "\\|")
            cells.append(text if len(text) <= width else text[: width - 1] + "…")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG embedded in Markdown metadata (the UI shows it inline; no file server needed)."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def latest_metadata(
    context: dg.AssetCheckExecutionContext, asset: dg.AssetsDefinition, partitions: list[str]
) -> dict[str, dict]:
    """Plain values of the metadata of ``asset``'s newest materialisation of each of ``partitions``
    (``{partition: metadata}``, empty for one never materialised): one query for all of them."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=list(partitions)),
        limit=max(1, 4 * len(partitions)),
    ).records
    found: dict[str, dict] = {}
    for record in records:  # newest first: each partition's first is its latest
        materialization = record.asset_materialization
        if materialization is not None and record.partition_key not in found:
            found[record.partition_key] = {k: v.value for k, v in materialization.metadata.items()}
    return {key: found.get(key, {}) for key in partitions}


def partition_results(
    context: dg.AssetExecutionContext, results: Mapping[str, tuple[object, Mapping[str, object]]]
) -> dg.MaterializeResult:
    """The result of a run over ``results`` (``{partition: (value, metadata)}``): one partition's
    value and metadata as usual; several partitions' values as ``{partition: value}`` for the IO
    manager, each partition's metadata on its own materialisation."""
    if len(results) == 1:
        ((value, metadata),) = results.values()
        return dg.MaterializeResult(value=value, metadata=dict(metadata))
    add_partition_metadata(context, {key: metadata for key, (_, metadata) in results.items()})
    return dg.MaterializeResult(value={key: value for key, (value, _) in results.items()})


def add_partition_metadata(
    context: dg.AssetExecutionContext, metadata: Mapping[str, Mapping[str, object]]
) -> None:
    """Each partition's ``metadata`` (``{partition: {name: value}}``) on its own materialisation of
    the run's asset, as ``context.add_asset_metadata(..., partition_key=)`` puts it.

    Dagster's ``add_asset_metadata`` checks each key against the run's range by listing every
    partition of the dynamic definition (three instance queries, ~7 ms with 1,000 partitions, more
    with more) on every call: quadratic in a run over many partitions. Here the keys are checked
    once against ``context.partition_keys`` (ValueError naming the strays) and the metadata goes to
    the step's metadata accumulator in one pass; where a Dagster release has no such accumulator
    it falls back to ``add_asset_metadata`` per key (the same result, at Dagster's cost)."""
    run_keys = set(context.partition_keys)
    stray = [key for key in metadata if key not in run_keys]
    if stray:
        raise ValueError(f"metadata for partitions this run does not materialise: {', '.join(stray[:10])}")
    step = _step_with_accumulator(context)
    if step is None:
        for key, values in metadata.items():
            context.add_asset_metadata(dict(values), partition_key=key)
        return
    accumulator = step._metadata_accumulator
    asset_key = context.assets_def.key
    for key, values in metadata.items():
        accumulator = accumulator.with_additional_asset_metadata(
            asset_key=asset_key, partition_key=key, metadata=dict(values)
        )
    step._metadata_accumulator = accumulator


def partition_checks(
    context: dg.AssetCheckExecutionContext,
    results: Mapping[str, dg.AssetCheckResult],
    *,
    blocking: bool = True,
) -> Iterator[dg.AssetCheckResult | dg.AssetCheckEvaluation | dg.Output]:
    """The check's results of a run over ``results`` (``{partition: result}``): one partition's result
    as usual; several partitions' as one evaluation each (a failed blocking one stops the run's
    downstream steps, every partition of the run waiting with it)."""
    if len(results) == 1:
        yield from results.values()
        return
    (check_key,) = context.selected_asset_check_keys
    for key, result in results.items():
        yield dg.AssetCheckEvaluation(
            asset_key=check_key.asset_key,
            check_name=check_key.name,
            passed=result.passed,
            metadata=result.metadata,
            severity=result.severity,
            description=result.description,
            blocking=blocking,
            partition=key,
        )
    # The check's op has one output; evaluations do not produce it.
    yield dg.Output(None, output_name=context.op_execution_context.op_def.output_defs[0].name)


def _step_with_accumulator(context: dg.AssetExecutionContext) -> object | None:
    """The step context holding the metadata accumulator ``add_asset_metadata`` adds to, or None
    where this Dagster release keeps it elsewhere."""
    step = getattr(context.op_execution_context, "_step_execution_context", None)
    accumulator = getattr(step, "_metadata_accumulator", None)
    return step if hasattr(accumulator, "with_additional_asset_metadata") else None
