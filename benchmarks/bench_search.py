"""The seed search's host and bus costs, side by side: today's host loop against the device-resident
search of the ``cuda`` backend, and on a GPU the search against its bare kernel.

``python -m benchmarks.bench_search`` (about a minute here) or ``--full``; ``--gpu-only --json F`` is
what ``scripts/gpu_check.sh`` runs on a GPU machine. Rows:

- **host loop** (``search_frames`` with an evaluator that costs nothing: it returns slices of arrays
  made beforehand): difficulty 32 so no frame finishes, 12 generations, population 256, one kernel
  call per generation over ``frames_per_call`` frames. Host ns per evaluation = wall ÷ evaluations:
  the ceiling it puts on any kernel is 1e9 ÷ that.
- **device search driver** (``DeviceSearch`` on the host build of ``device_search.cu`` with the
  stand-in recursion, at D = 17 so frames finish as they do in training): host ns per evaluation =
  (wall − time inside launches) ÷ evaluations; bus bytes per evaluation = bytes copied either way ÷
  evaluations. Its seeds are checked against the host loop's on the same frames.
- **CPU search at D = 17** (the ``cpu`` backend, real recursion, every core): frames solved per hour,
  measured (solved ÷ wall), and evaluations/s × 3600 / 2^17.
- **GPU** (when CuPy sees a device): the bare kernel (``hasher_evaluate`` on rows already on the
  device) and the device search at D = 17 on enough frames to fill the device several times; search
  efficiency = search evaluations/s ÷ bare kernel evaluations/s, frames solved per hour measured.
- **static**: the sm_90 SASS of the search kernel's pass loop next to the bare kernel's (the basis of
  the GPU projection when no GPU ran), registers and spills.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.results import publish
from hasher_core.design import DIFFICULTY_BITS, VOCABULARY_SIZE
from hasher_core.search.config import SearchConfig
from hasher_core.search.loop import search_frames
from hasher_resources import sha256
from hasher_resources.sha256 import cuda_build, device_search, device_search_host

POPULATION = 256
HOST_LOOP_GENERATIONS = 12
#: Targets of issue 17: the device driver's host work and bus traffic per evaluation.
DEVICE_HOST_NS_TARGET = 0.5
BUS_BYTES_TARGET = 0.1
#: An H100 SXM: SMs, the search kernel's registers and shared memory (static, sm_90 build), and the
#: 21-pass evaluations/s of its physical limit (docs/performance.md §1.2).
H100_SMS = 132
H100_REGISTERS = 80
H100_SHARED_BYTES = 5968
H100_EVALUATIONS_PER_S = 245e6


def frames(n: int, seed: int = 17) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**32, (n, 12), dtype=np.uint32), rng.integers(0, VOCABULARY_SIZE, n)


def free_evaluator(rows: int):
    """An evaluator that costs nothing: slices of random goldens and keys made beforehand."""
    rng = np.random.default_rng(5)
    golden = rng.integers(0, 2**32, rows, dtype=np.uint64).astype(np.uint32)
    keys = rng.integers(0, 2**32, (rows, 3), dtype=np.uint64).astype(np.uint32)
    return lambda slots, seeds, header_time: (golden[: len(slots)], keys[: len(slots)])


def host_loop_rows(batches: list[int], reps: int) -> tuple[list[list[object]], dict[str, float]]:
    """Today's host loop: ns of host work per evaluation, per strategy and frames_per_call."""
    rows, figures = [], {}
    evaluate = free_evaluator(max(batches) * POPULATION)
    for strategy in ("grpo", "scan"):
        worst = 0.0
        for batch in batches:
            config = SearchConfig(
                difficulty_bits=32,
                population=POPULATION,
                strategy=strategy,
                max_generations=HOST_LOOP_GENERATIONS,
                frames_per_call=batch,
            )
            slots, targets = frames(batch)
            search_frames(slots[:2], targets[:2], config, evaluate)  # compile and warm up
            best = np.inf
            for _ in range(reps):
                r = search_frames(slots, targets, config, evaluate)
                best = min(best, r.wall_seconds / r.run_evaluations * 1e9)
            figures[f"host_ns_per_evaluation_{strategy}_{batch}"] = best
            worst = max(worst, best)
            rows.append(
                [f"host loop ({strategy})", f"{batch:,} frames × {POPULATION}", f"{r.run_evaluations:,}",
                 f"{best:.1f}", f"{1e9 / best / 1e6:,.0f} M/s", "-"]
            )  # fmt: skip
        figures[f"host_ns_per_evaluation_{strategy}"] = worst
    return rows, figures


def driver_figures(driver: device_search.DeviceSearch) -> tuple[float, float]:
    """Host ns and bus bytes per evaluation of the driver's last run."""
    s = driver.stats
    return s.host_seconds / s.evaluations * 1e9, s.bus_bytes / s.evaluations


def device_model_rows(waves: int) -> tuple[list[list[object]], dict[str, float], list[str]]:
    """The driver's host work at an H100's launch sizes, on a device that costs nothing."""
    rows, figures = [], {}
    for strategy in ("grpo", "scan"):
        config = SearchConfig(population=POPULATION, strategy=strategy)
        threads = device_search.block_threads(config)
        per_sm = device_search.blocks_per_sm(
            threads, H100_REGISTERS, H100_SHARED_BYTES, device_search.SmLimits()
        )
        blocks = H100_SMS * per_sm
        generations = round(device_search.LAUNCH_SECONDS * H100_EVALUATIONS_PER_S / (blocks * threads))
        per_frame = -(-(2**DIFFICULTY_BITS) // threads)  # a solve costs 2^D evaluations on average
        driver = device_search.DeviceSearch(
            device_search_host.ZeroCostLauncher(blocks=blocks, generations_per_frame=per_frame),
            generations_per_launch=generations,
        )
        slots, targets = frames(blocks * waves, seed=1)
        search_frames(slots, targets, config, None, driver=driver)
        host_ns, bus = driver_figures(driver)
        suffix = "" if strategy == "grpo" else "_scan"
        figures[f"device_search_host_ns_per_evaluation{suffix}"] = host_ns
        figures[f"bus_bytes_per_evaluation_h100_launches{suffix}"] = bus
        s = driver.stats
        rows.append(
            [f"device search driver ({strategy}), H100 launch sizes", f"{len(slots):,} frames, "
             f"{blocks} blocks × {threads} threads, {generations} generations/launch", f"{s.evaluations:,}",
             f"{host_ns:.4f}", f"{1e9 / host_ns / 1e9:,.0f} G/s",
             f"{bus:.5f} B/evaluation; {s.launches} launches; {host_ns / (1e9 / H100_EVALUATIONS_PER_S):.2%} "
             "of an H100 evaluation's time"]
        )  # fmt: skip
    notes = [
        "H100 launch sizes: the real driver (DeviceSearch) on a device that costs nothing "
        "(device_search_host.ZeroCostLauncher: a launch does the claims, budgets, records and counters, "
        f"evaluates nothing, each frame finishes after 2^{DIFFICULTY_BITS} ÷ threads generations) with an "
        f"H100's geometry: {H100_SMS} SMs × the blocks {H100_REGISTERS} registers allow, and "
        f"{device_search.LAUNCH_SECONDS} s launches at {H100_EVALUATIONS_PER_S / 1e6:.0f} M evaluations/s. "
        "Host ns = (wall − time inside launches) ÷ evaluations: ring refills, counters, records, "
        "FinishedFrames, progress. This is the figure the ≤ 0.5 ns target is about."
    ]
    return rows, figures, notes


def device_driver_rows(n: int, difficulty: int) -> tuple[list[list[object]], dict[str, float], list[str]]:
    """The device search on its host build (stand-in recursion): host ns and bus bytes per
    evaluation with CPU-sized launches, and its seeds against the host loop's."""
    try:
        device_search_host.host_library(standin=True)
    except device_search_host.HostBuildError as exc:
        return [], {}, [f"Device search host build not measured: {exc}"]
    rows, figures = [], {}
    slots, targets = frames(n, seed=difficulty)
    for strategy in ("grpo", "scan"):
        config = SearchConfig(difficulty_bits=difficulty, population=POPULATION, strategy=strategy)
        driver = device_search.DeviceSearch(lambda: device_search_host.HostLauncher(standin=True, blocks=8))
        r = search_frames(slots, targets, config, None, driver=driver)
        host_ns, bus = driver_figures(driver)
        same = search_frames(slots, targets, config, device_search_host.standin_evaluate)
        equal = all(
            np.array_equal(getattr(r, k), getattr(same, k))
            for k in ("best_seed", "golden", "generations", "evaluations", "solved")
        ) and np.array_equal(r.reward.view(np.uint32), same.reward.view(np.uint32))
        suffix = "" if strategy == "grpo" else "_scan"
        figures[f"device_search_host_ns_per_evaluation_host_build{suffix}"] = host_ns
        figures[f"bus_bytes_per_evaluation{suffix}"] = bus
        figures[f"device_search_seeds_equal_host_loop{suffix}"] = float(equal)
        s = driver.stats
        rows.append(
            [f"device search on its host build ({strategy})", f"{n} frames at D = {difficulty}, "
             f"{s.launches} launches", f"{s.evaluations:,}", f"{host_ns:.3f}",
             f"{1e9 / host_ns / 1e9:,.1f} G/s",
             f"{bus:.4f} B/evaluation; {s.evaluations / s.launches:,.0f} evaluations/launch; same seeds as "
             f"the host loop: {'yes' if equal else 'NO'}"]
        )  # fmt: skip
    notes = [
        "Host build: DeviceSearch on device_search.cu compiled for this CPU with the stand-in recursion "
        f"(8 blocks, launches sized to {device_search.LAUNCH_SECONDS} s of this CPU's time), population "
        f"{POPULATION}: the same host work per launch, spread over the 10–40× fewer evaluations a CPU "
        "launch runs, and the check that its seeds equal the host loop's."
    ]
    return rows, figures, notes


def cpu_solve_rows(n: int) -> tuple[list[list[object]], dict[str, float]]:
    """Frames solved per hour at the default difficulty on the ``cpu`` backend (real recursion)."""
    rows, figures = [], {}
    slots, targets = frames(n, seed=99)

    def evaluate(s, sd, header_time):
        return sha256.evaluate_with_keys(s, sd, header_time=header_time, backend="cpu")

    for strategy in ("grpo", "scan"):
        config = SearchConfig(strategy=strategy)
        search_frames(slots[:1], targets[:1], SearchConfig(difficulty_bits=4, strategy=strategy), evaluate)
        r = search_frames(slots, targets, config, evaluate)
        per_hour = 3600 * int(r.solved.sum()) / r.wall_seconds
        rate = r.run_evaluations / r.wall_seconds
        figures[f"cpu_frames_solved_per_hour_d17_{strategy}"] = per_hour
        rows.append(
            [f"cpu search ({strategy}, {sha256.cpu.select_kernel()})", f"{n} frames at D = {DIFFICULTY_BITS}",
             f"{r.run_evaluations:,}", "-", f"{rate:,.0f}/s",
             f"{per_hour:,.0f} frames solved/hour measured ({int(r.solved.sum())} in "
             f"{r.wall_seconds:.1f} s); "
             f"{rate * 3600 / 2**DIFFICULTY_BITS:,.0f} from evaluations/s"]
        )  # fmt: skip
    return rows, figures


def gpu_rows(frames_per_block: int) -> tuple[list[list[object]], dict[str, float], list[str]]:
    """The device search against the bare kernel on the GPU, in one run."""
    if not sha256.cuda_available():
        return [], {}, ["No CUDA device visible (CuPy missing or no GPU): GPU rows not measured."]
    import cupy

    from hasher_resources.sha256 import cuda

    name = cuda.device_name()
    count = 1 << 22
    rng = np.random.default_rng(1)
    d_slots = cupy.asarray(rng.integers(0, 2**32, count * 12, dtype=np.uint64).astype(np.uint32))
    d_seeds = cupy.asarray(rng.integers(0, 2**32, count * 8, dtype=np.uint64).astype(np.uint32))
    d_golden, d_keys = cupy.empty(count, np.uint32), cupy.empty(count * 3, np.uint32)
    kernel = cuda._kernel("hasher_evaluate")
    grid = ((count + cuda.CUDA_BLOCK - 1) // cuda.CUDA_BLOCK,)
    best = np.inf
    for _ in range(6):  # the first launch warms up
        cupy.cuda.Device().synchronize()
        t0 = time.perf_counter()
        kernel(grid, (cuda.CUDA_BLOCK,), (d_slots, d_seeds, np.uint32(0), d_golden, d_keys, np.uint64(count)))
        cupy.cuda.Device().synchronize()
        best = min(best, time.perf_counter() - t0)
    kernel_rate = count / best
    figures = {"gpu_kernel_evaluations_per_s": kernel_rate}
    rows = [[f"bare kernel hasher_evaluate, {name}", f"{count:,} rows on the device", f"{count:,}", "-",
             f"{kernel_rate:,.0f}/s",
             f"{kernel_rate / 245e6:.1%} of the H100/H200 limit (245 M/s)"]]  # fmt: skip
    launcher = device_search.CupyLauncher(cupy.cuda.Device().id)
    for strategy in ("grpo", "scan"):
        config = SearchConfig(strategy=strategy)
        resident = launcher.resident_blocks(device_search.block_threads(config))
        slots, targets = frames(resident * frames_per_block, seed=3)
        search_frames(slots[:resident], targets[:resident], SearchConfig(difficulty_bits=8), None,
                      driver=device_search.DeviceSearch(launcher))  # fmt: skip
        driver = device_search.DeviceSearch(launcher)
        r = search_frames(slots, targets, config, None, driver=driver)
        s = driver.stats
        steady = s.steady_evaluations_per_s()
        whole = r.run_evaluations / r.wall_seconds
        solved = int(r.solved.sum())
        per_hour = steady * 3600 * solved / r.run_evaluations  # at the steady pace, this run's cost per solve
        suffix = "" if strategy == "grpo" else "_scan"
        figures |= {
            f"gpu_search_evaluations_per_s{suffix}": steady,
            f"gpu_search_efficiency{suffix}": steady / kernel_rate,
            f"gpu_frames_solved_per_hour_d17{suffix}": per_hour,
            f"gpu_search_evaluations_per_s_whole_run{suffix}": whole,
            f"gpu_frames_solved_per_hour_d17_whole_run{suffix}": 3600 * solved / r.wall_seconds,
            f"gpu_device_search_host_ns_per_evaluation{suffix}": s.host_seconds / s.evaluations * 1e9,
            f"gpu_bus_bytes_per_evaluation{suffix}": s.bus_bytes / s.evaluations,
            f"gpu_launch_seconds_max{suffix}": max(launch.device_seconds for launch in s.launch_log),
        }
        rows.append(
            [f"device search ({strategy}), {name}", f"{len(slots):,} frames at D = {DIFFICULTY_BITS}, "
             f"{resident} blocks × {s.threads} threads", f"{r.run_evaluations:,}",
             f"{s.host_seconds / s.evaluations * 1e9:.3f}", f"{steady:,.0f}/s",
             f"efficiency {steady / kernel_rate:.3f}; {per_hour:,.0f} frames solved/hour; whole run "
             f"{whole:,.0f}/s, {3600 * solved / r.wall_seconds:,.0f} frames/hour with its tail; "
             f"{s.launches} launches of ≤ {max(s.generations_per_launch)} generations, the longest "
             f"{figures[f'gpu_launch_seconds_max{suffix}']:.2f} s; "
             f"{s.bus_bytes / s.evaluations:.5f} B/evaluation"]
        )  # fmt: skip
    notes = [
        f"GPU: {name}. Efficiency = the search's evaluations/s while frames were still waiting (launches "
        "and the host work between them) ÷ the bare kernel's on rows already on the device, in the same "
        "run. Frames solved/hour = that pace × this run's solves per evaluation. Whole run: wall clock, "
        "including the tail, when the last frames run while other blocks have no frame left (about "
        "blocks × ln(blocks) frame-times of idle capacity per partition)."
    ]
    return rows, figures, notes


def innermost_big_loop(instructions: list, least: int = 2000) -> list:
    """The smallest loop (backward branch span) with at least ``least`` instructions: the 22-pass
    loop, also inside the search kernel's generation loop."""
    best = None
    for ins in instructions:
        if ins.opcode == "BRA":
            target = int(ins.operands.split()[-1], 16)
            span = [i for i in instructions if target <= i.address <= ins.address]
            if target < ins.address and len(span) >= least and (best is None or len(span) < len(best)):
                best = span
    return best or []


def sass_rows() -> tuple[list[list[object]], dict[str, float], list[str]]:
    """Static sm_90 figures of the search kernel next to the bare kernel (no GPU needed)."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            search_cubin, search_report = cuda_build.build_cubin(
                Path(tmp), "sm_90", source=device_search.search_source(), name="device_search",
                options=("-std=c++17", *device_search.FLOAT_OPTIONS),
            )  # fmt: skip
            bare_cubin, _ = cuda_build.build_cubin(Path(tmp), "sm_90")
            search_code = cuda_build.sass(search_cubin)[device_search.KERNEL]
            bare_code = cuda_build.sass(bare_cubin)["hasher_evaluate"]
    except (cuda_build.CudaToolMissing, RuntimeError) as exc:
        return [], {}, [f"CUDA SASS not counted: {exc}"]
    used = cuda_build.kernel_resources(search_report)[device_search.KERNEL]
    search_loop, bare_loop = innermost_big_loop(search_code), innermost_big_loop(bare_code)
    per = len(search_loop) / cuda_build.COMPRESSIONS_PER_PASS
    bare_per = len(bare_loop) / cuda_build.COMPRESSIONS_PER_PASS
    occupancy = device_search.blocks_per_sm(192, used.registers, 6000, device_search.SmLimits())
    figures = {
        "search_sass_per_compression": per,
        "bare_sass_per_compression": bare_per,
        "search_registers": used.registers,
        "search_spill_bytes": used.spill_store_bytes + used.spill_load_bytes + used.stack_frame_bytes,
    }
    row = ["device search kernel, sm_90 SASS (static)", "-", f"{len(search_code):,} instructions", "-", "-",
           f"pass loop {per:,.0f} per compression (bare kernel {bare_per:,.0f}); {used.registers} registers "
           f"({occupancy} blocks of 192 threads per SM); spill/stack bytes {figures['search_spill_bytes']}; "
           f"local-memory instructions {len(cuda_build.local_memory(search_code))}"]  # fmt: skip
    return [row], figures, []


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="more frames and repetitions")
    parser.add_argument("--batch", default="256,4096", help="frames_per_call of the host-loop rows")
    parser.add_argument(
        "--device-frames", type=int, default=0, help="frames of the driver rows (default 192)"
    )
    parser.add_argument("--device-difficulty", type=int, default=DIFFICULTY_BITS)
    parser.add_argument(
        "--waves", type=int, default=0, help="frames per block of the H100-size rows (default 4)"
    )
    parser.add_argument(
        "--cpu-frames", type=int, default=0, help="frames of the CPU D = 17 rows (default 24)"
    )
    parser.add_argument("--gpu-frames-per-block", type=int, default=16)
    parser.add_argument(
        "--gpu-only", action="store_true", help="GPU and static rows only (scripts/gpu_check.sh)"
    )
    parser.add_argument("--no-static", action="store_true", help="skip the sm_90 SASS row (nvcc, ~20 s)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    args, _ = parser.parse_known_args(argv)  # python -m benchmarks passes every benchmark the same flags

    headers = ["what", "work", "evaluations", "host ns per evaluation", "rate (ceiling for the host loop)",
               "notes"]  # fmt: skip
    rows: list[list[object]] = []
    figures: dict[str, float] = {}
    notes: list[str] = []
    if not args.gpu_only:
        part, found = host_loop_rows([int(b) for b in args.batch.split(",")], 5 if args.full else 3)
        rows += part
        figures |= found
        notes.append(
            "Host loop: search_frames with an evaluator that costs nothing, difficulty 32 (no frame "
            f"finishes), {HOST_LOOP_GENERATIONS} generations, population {POPULATION}, frames = "
            "frames_per_call; best of "
            "the repetitions. Rate = 1e9 ÷ host ns: the most evaluations/s any kernel could get through it."
        )
        for part, found, said in (
            device_model_rows(args.waves or (8 if args.full else 4)),
            device_driver_rows(args.device_frames or (512 if args.full else 192), args.device_difficulty),
        ):
            rows += part
            figures |= found
            notes += said
        part, found = cpu_solve_rows(args.cpu_frames or (64 if args.full else 24))
        rows += part
        figures |= found
    sections = [gpu_rows(args.gpu_frames_per_block)] + ([] if args.no_static else [sass_rows()])
    for part, found, said in sections:
        rows += part
        figures |= found
        notes += said
    for key, target in (("device_search_host_ns_per_evaluation", DEVICE_HOST_NS_TARGET),
                        ("bus_bytes_per_evaluation", BUS_BYTES_TARGET)):  # fmt: skip
        if key in figures:
            verdict = "meets" if figures[key] <= target else "MISSES"
            notes.append(f"{key} = {figures[key]:.4f}: {verdict} the target ≤ {target}.")
    notes.append(f"Load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}.")
    title = "Seed search: host loop vs device search" + (" (full)" if args.full else " (quick)")
    publish(title, headers, rows, notes, figures, json_path=args.json, no_record=args.no_record)
    return figures


if __name__ == "__main__":
    main()
