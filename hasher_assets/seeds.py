"""Stage 3 — ``seeds``: search each frame for a 32-byte seed whose recursion lands on its token.

The search (DESIGN §4.4) runs vectorised over many frames per kernel call; every finished frame is
committed to the partition's progress store as it finishes, so a killed run resumes where it was.
The output is the frames with ``best_seed`` filled and the search metrics of DESIGN §4.5. A run over
a range of partitions searches their frames together (the kernel's calls stay full whatever the
partitions' size), each partition's finished frames committed to its own store.
"""

import contextlib
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import numpy as np
import pyarrow as pa
import pydantic
from pydantic import Field

from hasher_core.design import ALGORITHM_VERSION
from hasher_core.errors import FramesInputError
from hasher_core.rate_log import RateReporter, format_duration
from hasher_core.search import (
    SearchConfig,
    attach_results,
    frame_fingerprints,
    search_frames,
    search_plot_png,
    validate_frames_table,
)
from hasher_core.search.config import Knob, knobs
from hasher_resources.files import atomic_write_bytes
from hasher_resources.progress_store import SqliteProgressStore, StoresByFingerprint
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_resources.storage import HasherStorage

from .executors import step_op_tags
from .metadata import partition_results, png_markdown, preview_markdown
from .partitions import PartitionInput, backfill_policy, by_partition, source_files


def _config_field(knob: Knob) -> tuple[Any, Any]:
    """A pydantic field for one search knob: lists for tuples, Literal for choices, the bounds."""
    kind: Any = knob.kind
    if knob.choices:
        kind = Literal[knob.choices]
    bounds = dict(knob.bounds)
    default = knob.default
    if knob.is_list:
        kind = list[kind]
        default = None if default is None else list(default)
        if knob.length is not None:
            bounds.update(min_length=knob.length, max_length=knob.length)
        if knob.optional:
            kind = kind | None
    return kind, Field(default=default, description=knob.description, **bounds)


#: The search's launchpad config, generated from ``SearchConfig`` (DESIGN §4.3–4.4): one field per
#: knob with the same default, bounds and description, so the two can never disagree.
SeedsConfig = pydantic.create_model(
    "SeedsConfig",
    __base__=dg.Config,
    __doc__="The seed search: difficulty, population, strategy, reward weights and randomness. Every "
    "field but frames_per_call is part of each frame's fingerprint: changing it searches the frames "
    "again instead of reusing the progress store.",
    **{knob.name: _config_field(knob) for knob in knobs()},
)


def search_config(config: dg.Config) -> SearchConfig:
    """The validated :class:`SearchConfig` of a ``SeedsConfig`` (lists back to tuples)."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model_dump().items()}
    return SearchConfig(**values).validate()


#: Partitions whose frames one search takes together in a run over a range of partitions: each
#: holds its progress store (a lock and an SQLite file) open while the search runs.
SEARCH_GROUP_PARTITIONS = 128


@dg.asset(
    partitions_def=source_files,
    backfill_policy=backfill_policy(),
    group_name="train",
    kinds={"sha256", "numba"},
    io_manager_key="parquet_io_manager",
    pool="sha256",
    op_tags=step_op_tags("seeds"),
    description="Each frame's best_seed: 32 bytes whose 21-pass SHA-256 recursion gives a golden whose "
    "top difficulty_bits bits match target_token_id << 15 (17 = the exact token, about 2^17 "
    "evaluations per frame), with golden, matched_bits, solved, reward, generations, evaluations and "
    "fingerprint. Finished frames are committed to a progress store as they finish, so rerunning a "
    "killed or failed run resumes where it stopped. Unsolved frames keep their best seed "
    "(solved=false): raise max_generations and rerun; seeds below 17 bits predict no token.",
)
def seeds(
    context: dg.AssetExecutionContext,
    config: SeedsConfig,  # type: ignore[valid-type]
    training_frames: PartitionInput,
    kernel: Sha256Kernel,
    storage: HasherStorage,
) -> dg.MaterializeResult:
    search = search_config(config)
    frames = {key: handle.read() for key, handle in by_partition(context, training_frames).items()}
    total = sum(t.num_rows for t in frames.values())
    kernel_info = kernel.describe()  # backend plus its device, or threads and CPU path (shani / simd)
    driver = kernel.search_driver()  # on a GPU the generations run on the device
    kernel_info["kernel_search_loop"] = "device" if driver is not None else "host"
    kernel_line = ", ".join(f"{k.removeprefix('kernel_')} {v}" for k, v in kernel_info.items())
    context.log.info(
        f"searching {total:,} frames of {len(frames)} partition(s) at {search.difficulty_bits} bits "
        f"(strategy {search.strategy}, population {search.population}, kernel {kernel_line})"
    )
    reporter = RateReporter("seeds", total, context.log.info, unit="frames", every_s=5.0)
    done = {"frames": 0, "solved": 0}
    keys = list(frames)
    results: dict[str, tuple[object, dict[str, object]]] = {}
    for lo in range(0, len(keys), SEARCH_GROUP_PARTITIONS):
        group = {key: frames[key] for key in keys[lo : lo + SEARCH_GROUP_PARTITIONS]}
        found, history = _search_group(context, group, search, kernel, driver, storage, reporter, done)
        plot = search_plot_png(history)
        plot_path = atomic_write_bytes(storage.stage_dir("seeds_plots") / f"{keys[lo]}.png", plot)
        for key, (table, mine, store_path) in found.items():
            metadata = {
                **mine.summary(),
                "strategy": search.strategy,
                "elapsed": format_duration(mine.wall_seconds),
                **kernel_info,
                "progress_store": dg.MetadataValue.path(str(store_path)),
            }
            if note := mine.note(search.max_generations):
                context.log.warning(f"partition {key!r}: {note}")
                metadata["note"] = note
            # A run over many partitions keeps one plot file, not one copy in each's metadata.
            results[key] = (table, _metadata(table, metadata, plot if len(keys) == 1 else None, plot_path))
            done["frames"] += table.num_rows
            done["solved"] += int(mine.solved.sum())
    reporter.finish(total, f"{done['solved']:,} solved")
    return partition_results(context, results)


def _search_group(context, group, search, kernel, driver, storage, reporter, done):
    """One search over the frames of the partitions ``group`` ({key: frames table}), each partition's
    finished frames committed to its own progress store. Returns ``({key: (seeds table, its rows'
    results, store path)}, the search's history)``."""
    slots, targets, owners, bounds = [], [], {}, {}
    offset = 0
    for key, table in group.items():
        try:
            s, t = validate_frames_table(table)
        except FramesInputError as e:
            raise FramesInputError(f"partition {key!r}: {e}") from e
        slots.append(s)
        targets.append(t)
        for fingerprint in frame_fingerprints(s, t, search):
            mine = owners.setdefault(fingerprint, [])
            if not mine or mine[-1] != key:
                mine.append(key)
        bounds[key] = slice(offset, offset + len(t))
        offset += len(t)

    def progress(p) -> None:
        rate = f"{p.evaluations_per_s:,.0f} evaluations/s"
        reporter.update(done["frames"] + p.frames_done, f"{done['solved'] + p.solved:,} solved, {rate}")

    progress_dir = storage.progress_path()  # once: it checks the filesystem's type
    paths = {key: progress_dir / f"{key}.sqlite" for key in group}
    with contextlib.ExitStack() as stack:
        stores = {
            key: stack.enter_context(SqliteProgressStore.open(path, partition=key, wait_s=30.0))
            for key, path in paths.items()
        }
        stale = {key: other for key, store in stores.items() if (other := store.other_versions())}
        if stale:
            versions = ", ".join(sorted({v for other in stale.values() for v in other}))
            context.log.warning(
                f"progress stores of {', '.join(sorted(stale)[:5])}{' …' * (len(stale) > 5)} hold "
                f"{sum(sum(o.values()) for o in stale.values()):,} seeds of {versions} (another objective): "
                f"none is reused; this run searches for {ALGORITHM_VERSION}"
            )
        found = search_frames(
            np.concatenate(slots),
            np.concatenate(targets),
            search,
            lambda s, sd, t: kernel.evaluate_with_keys(s, sd, header_time=t),
            store=StoresByFingerprint(stores, owners),
            progress=progress,
            driver=driver,
        )
    backend = kernel.backend_name()
    out = {}
    for key, table in group.items():
        mine = found.rows(bounds[key])
        out[key] = (attach_results(table, mine, search, backend), mine, paths[key])
    return out, found.history


def _metadata(table: pa.Table, figures: dict, plot: bytes | None, plot_path: Path) -> dict[str, object]:
    columns = ["chunk_id", "window_end", "target_token_id", "golden", "matched_bits", "solved"]
    return {
        "dagster/row_count": table.num_rows,
        **figures,
        **({"plot": png_markdown(plot, "search progress")} if plot is not None else {}),
        "plot_path": dg.MetadataValue.path(str(plot_path)),
        "preview": dg.MetadataValue.md(preview_markdown(table, columns)),
    }
