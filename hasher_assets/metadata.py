"""Materialisation metadata the stages share: Markdown previews, embedded plots, the latest metadata."""

import base64

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


def latest_metadata(context: dg.AssetCheckExecutionContext, asset: dg.AssetsDefinition) -> dict:
    """Plain values of the metadata of ``asset``'s newest materialisation of this partition."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=[context.partition_key]), limit=1
    ).records
    if not records:
        return {}
    materialization = records[0].asset_materialization
    return {k: v.value for k, v in (materialization.metadata if materialization else {}).items()}
