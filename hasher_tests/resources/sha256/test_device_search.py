"""The device-resident search of the ``cuda`` backend (``device_search.cu`` + ``DeviceSearch``).

Without a GPU, the kernel's source is compiled for the host (``device_search_host``) and driven by the
same driver as on a GPU; the tests marked ``device_search`` check that it gives every frame exactly the
seed, golden, reward, generations and evaluations of the Numba search (``search_frames`` on the
``cpu`` backend), on hundreds of frames, both strategies, schedules, exhaustion, duplicates and
resumed stores. The sm_90 build is checked statically (no spills, no local memory, no contracted
float arithmetic). Tests marked ``gpu`` run the real thing through CuPy (``scripts/gpu_check.sh``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable

import numba
import numpy as np
import pytest

from hasher_core.design import SEED_BYTES, VOCABULARY_SIZE
from hasher_core.search import device_layout as layout
from hasher_core.search import fused, fused_math
from hasher_core.search import reward as spec
from hasher_core.search.config import SearchConfig
from hasher_core.search.loop import search_frames
from hasher_core.search.records import FinishedFrame, SearchResults
from hasher_resources import sha256
from hasher_resources.sha256 import cuda_build, device_search, device_search_host
from hasher_resources.sha256.device_search import DeviceSearch, blocks_per_sm
from hasher_resources.sha256.device_search_host import HostLauncher, standin_evaluate
from hasher_tests.resources.sha256.test_cuda import _require, nvrtc_ptx

FIELDS = (
    "fingerprint",
    "best_seed",
    "golden",
    "matched_bits",
    "hamming",
    "generations",
    "evaluations",
    "solved",
)


def cpu_evaluate(slots, seeds, header_time):
    return sha256.evaluate_with_keys(slots, seeds, header_time=header_time, backend="cpu")


def frames(n: int, seed: int = 1, duplicates: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, 2**32, (n, 12), dtype=np.uint32)
    targets = rng.integers(0, VOCABULARY_SIZE, n)
    if duplicates:
        rows = rng.integers(0, n, duplicates)
        slots, targets = np.concatenate([slots, slots[rows]]), np.concatenate([targets, targets[rows]])
    return slots, targets


def assert_same_results(cpu: SearchResults, device: SearchResults, *, same_run: bool = True) -> None:
    """Every per-row result equal (rewards bit for bit); for two runs that searched the same frames
    (``same_run``), what came from the store, the evaluations run and the history per generation too."""
    for name in FIELDS + (("from_store",) if same_run else ()):
        a, b = getattr(cpu, name), getattr(device, name)
        assert np.array_equal(a, b), (
            f"{name} differs in {int((a != b).reshape(len(a), -1).any(1).sum())} rows"
        )
    assert np.array_equal(cpu.reward.view(np.uint32), device.reward.view(np.uint32)), "reward bits differ"
    if not same_run:
        return
    assert cpu.run_evaluations == device.run_evaluations
    h, g = cpu.history, device.history
    assert np.array_equal(h.generation_frames, g.generation_frames)
    # per frame the same float32 means; summed over frames in another order (atomics): float64 noise only
    np.testing.assert_allclose(h.generation_mean_reward, g.generation_mean_reward, rtol=1e-12)
    np.testing.assert_allclose(h.generation_best_reward, g.generation_best_reward, rtol=1e-12)


def require_host_build(standin: bool) -> None:
    """The host build of the device search: g++ is on every machine of this project and in CI, where
    its absence fails; elsewhere (a lent GPU machine) the tests that need it skip."""
    try:
        device_search_host.host_library(standin)
    except device_search_host.HostBuildError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


def host_driver(
    *, standin: bool = False, blocks: int = 5, generations: int | None = 3, reverse: bool = False
) -> DeviceSearch:
    """The device search on its host build: ``blocks`` slots, ``generations`` per launch (None: sized
    to the launch time), each phase's threads last to first when ``reverse``."""
    require_host_build(standin)
    return DeviceSearch(
        lambda: HostLauncher(standin=standin, blocks=blocks, reverse_threads=reverse),
        generations_per_launch=generations,
    )


def host_launcher(**kw) -> HostLauncher:
    require_host_build(kw.get("standin", False))
    return HostLauncher(**kw)


class DictStore:
    """A ProgressStore in memory that remembers when each commit happened."""

    def __init__(self, moment: Callable[[], int] = lambda: 0) -> None:
        self.rows: dict[str, FinishedFrame] = {}
        self.commits: list[tuple[int, int]] = []  # (moment, frames)
        self.moment = moment

    def get_many(self, fingerprints: list[str]) -> dict[str, FinishedFrame]:
        return {f: self.rows[f] for f in fingerprints if f in self.rows}

    def put_many(self, results: list[FinishedFrame]) -> None:
        self.commits.append((self.moment(), len(results)))
        self.rows.update({r.fingerprint: r for r in results})


# --- the host build equals the Numba search, with the real recursion -------------------------------

REAL_CASES = {
    "grpo, 6 bits, duplicates, a header time": (
        SearchConfig(difficulty_bits=6, population=16, header_time=0xDEADBEEF, rng_seed=5),
        300,
        40,
    ),
    "scan, 8 bits": (SearchConfig(difficulty_bits=8, population=32, strategy="scan", rng_seed=1), 200, 0),
    "grpo, 10 bits, a schedule": (
        SearchConfig(difficulty_bits=10, difficulty_schedule=(6, 8), population=64, elite_ratio=0.3),
        120,
        0,
    ),
    "grpo, 12 bits, the default population": (SearchConfig(difficulty_bits=12), 30, 0),
    "grpo, exhausted at max_generations": (
        SearchConfig(difficulty_bits=12, population=48, max_generations=3),
        150,
        0,
    ),
    "scan, exhausted at max_generations": (
        SearchConfig(difficulty_bits=11, population=40, max_generations=4, strategy="scan"),
        150,
        0,
    ),
}


@pytest.mark.device_search
@pytest.mark.parametrize("case", list(REAL_CASES))
def test_host_build_finds_exactly_the_cpu_searchs_seeds(case):
    config, n, duplicates = REAL_CASES[case]
    slots, targets = frames(n, seed=len(case), duplicates=duplicates)
    cpu = search_frames(slots, targets, config, cpu_evaluate)
    device = search_frames(slots, targets, config, None, driver=host_driver(blocks=7, generations=2))
    assert_same_results(cpu, device)
    if "exhausted" in case:
        assert (~cpu.solved).any() and (cpu.generations[~cpu.solved] == config.max_generations).all()
    else:
        assert cpu.solved.all()
    if duplicates:
        assert device.unique_frames < len(slots)


@pytest.mark.device_search
@pytest.mark.parametrize("count", [0, 1, 7, 33])
def test_any_frame_count_and_more_blocks_than_frames(count):
    config = SearchConfig(difficulty_bits=8, population=24)
    slots, targets = frames(count, seed=count)
    cpu = search_frames(slots, targets, config, cpu_evaluate)
    driver = host_driver(blocks=9, generations=1)
    device = search_frames(slots, targets, config, None, driver=driver)
    assert_same_results(cpu, device)
    assert len(device) == count
    if count:
        assert driver.stats.blocks == min(9, count)


@pytest.mark.device_search
@pytest.mark.parametrize("strategy", ["grpo", "scan"])
def test_a_store_filled_by_one_backend_is_resumed_by_the_other(strategy):
    config = SearchConfig(difficulty_bits=9, population=32, strategy=strategy, rng_seed=3)
    slots, targets = frames(160, seed=9)
    whole = search_frames(slots, targets, config, cpu_evaluate)

    # a device run killed after its second launch, resumed on the device and on the CPU
    store = DictStore()
    launches = []

    def stop_after_two(_progress):
        launches.append(1)
        if len(launches) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search_frames(
            slots,
            targets,
            config,
            None,
            store=store,
            driver=host_driver(generations=2),
            progress=stop_after_two,
            progress_every_s=0.0,
        )
    partial = dict(store.rows)
    assert 0 < len(partial) < 160
    resumed = search_frames(slots, targets, config, None, store=store, driver=host_driver(generations=5))
    assert_same_results(whole, resumed, same_run=False)
    assert resumed.from_store.sum() == len(partial) and resumed.frames_searched == 160 - len(partial)
    store.rows = dict(partial)
    on_cpu = search_frames(slots, targets, config, cpu_evaluate, store=store)
    assert_same_results(resumed, on_cpu)

    # and a store the CPU search filled half-way, finished by the device
    half = DictStore()
    search_frames(slots[:80], targets[:80], config, cpu_evaluate, store=half)
    finished = search_frames(slots, targets, config, None, store=half, driver=host_driver())
    assert_same_results(whole, finished, same_run=False)
    assert finished.from_store[:80].all() and not finished.from_store[80:].any()


@pytest.mark.device_search
def test_no_phase_depends_on_the_order_of_its_threads():
    """Each phase run last thread first gives the same seeds: no thread reads what another writes in
    the same phase (the races a GPU could expose, checked on the host)."""
    config = SearchConfig(difficulty_bits=9, population=100, elite_ratio=0.2)
    slots, targets = frames(80, seed=4)
    forward = search_frames(slots, targets, config, None, driver=host_driver(standin=True))
    reverse = search_frames(slots, targets, config, None, driver=host_driver(standin=True, reverse=True))
    assert_same_results(forward, reverse)
    assert_same_results(search_frames(slots, targets, config, standin_evaluate), reverse)


# --- the search logic at sizes the real recursion is too slow for here (stand-in recursion) ----------

STANDIN_CASES = {
    "population 2": SearchConfig(difficulty_bits=8, population=2),
    "population 3, half elites": SearchConfig(difficulty_bits=9, population=3, elite_ratio=0.5),
    "population 129, 90 % elites": SearchConfig(difficulty_bits=11, population=129, elite_ratio=0.9),
    "population 1000, 1 % elites": SearchConfig(
        difficulty_bits=12, population=1000, elite_ratio=0.01, max_generations=40
    ),
    "population 4099 (a deep pairwise plan)": SearchConfig(
        difficulty_bits=14, population=4099, max_generations=6
    ),
    "scan, population 1000": SearchConfig(difficulty_bits=13, population=1000, strategy="scan"),
    "schedule 3, 5, 9": SearchConfig(difficulty_bits=13, difficulty_schedule=(3, 5, 9), population=300),
    "other reward weights": SearchConfig(difficulty_bits=10, population=50, reward_weights=(0.1, 2.5, 0.0)),
}


@pytest.mark.device_search
@pytest.mark.parametrize("case", list(STANDIN_CASES))
def test_search_logic_equals_the_cpu_search_at_any_population(case):
    config = STANDIN_CASES[case]
    slots, targets = frames(200, seed=len(case), duplicates=10)
    cpu = search_frames(slots, targets, config, standin_evaluate)
    device = search_frames(
        slots, targets, config, None, driver=host_driver(standin=True, blocks=6, generations=4)
    )
    assert_same_results(cpu, device)


@pytest.mark.device_search
@pytest.mark.parametrize(("blocks", "generations"), [(1, 1), (9, 37), (3, None)])
def test_blocks_and_launch_sizes_change_nothing(blocks, generations):
    config = SearchConfig(difficulty_bits=10, population=64)
    slots, targets = frames(150, seed=2)
    cpu = search_frames(slots, targets, config, standin_evaluate)
    device = search_frames(
        slots, targets, config, None, driver=host_driver(standin=True, blocks=blocks, generations=generations)
    )
    assert_same_results(cpu, device)


# --- the device functions one by one against fused.py -------------------------------------------------


def lib():
    require_host_build(False)
    return device_search_host.host_library(False)


def test_fresh_seeds_match_the_cpu_streams():
    keys = np.array([0, 1, 2**64 - 1, 987654321], np.uint64)
    for key in keys:
        for generation in (0, 1, 2**20):
            want = spec.fresh_seeds(np.array([key]), np.array([generation]), 37)[0]
            base = fused_math.stream_base(key, generation, spec.STREAM_FRESH)
            got = np.zeros((37, 5), np.uint32)
            for k in range(37):
                lib().hasher_host_fresh_seed(int(base), k, got[k].ctypes.data)
            assert (layout.seed_bytes(got) == want).all()


def test_scan_seeds_roll_the_extranonce_at_the_end_of_the_nonces():
    key = np.array([12345], np.uint64)
    population = 7
    generation = (2**32 - 3) // population  # this block crosses nonce 2^32
    want = spec.scan_population(key, np.array([generation]), population)[0]
    got = np.zeros((population, 5), np.uint32)
    for i in range(population):
        lib().hasher_host_scan_seed(int(key[0]), generation, population, i, got[i].ctypes.data)
    assert (layout.seed_bytes(got) == want).all()
    assert len({bytes(s[:16]) for s in want}) == 2  # two extranonces in one block


@pytest.mark.parametrize("advantage", [0.0, 3.0, -3.0, 1 / 3, 0.25, 1.5, 9.0, -0.7, 1e9, -1e-30])
def test_mutants_match_the_cpu_mutation(advantage):
    key = np.array([99], np.uint64)
    parents = spec.fresh_seeds(key, np.zeros(1, np.int64), 32)[0]
    base = np.uint64(fused_math.stream_base(key[0], 7, spec.STREAM_MUTATION))
    want = np.zeros((1, 32, SEED_BYTES), np.uint8)
    got = np.zeros((32, 5), np.uint32)
    words = layout.seed_words(parents)
    for e in range(32):
        w_nonce = np.uint64(fused_math.stream_word(base, 2 * e))
        w_ext = np.uint64(fused_math.stream_word(base, 2 * e + 1))
        fused.write_mutant(want, 0, e, parents, e, np.float32(advantage), w_nonce, w_ext)
        lib().hasher_host_mutant(
            words[e].ctypes.data, advantage, int(w_nonce), int(w_ext), got[e].ctypes.data
        )
    assert (layout.seed_bytes(got) == want[0]).all()


def test_rewards_match_the_numpy_definition_bit_for_bit():
    rng = np.random.default_rng(8)
    n = 3000
    targets = rng.integers(0, VOCABULARY_SIZE, n).astype(np.uint32) << np.uint32(15)
    golden = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    golden[:1000] ^= rng.integers(0, 2**12, 1000).astype(np.uint32)  # many near-matches
    golden[:1000] = (targets[:1000] & np.uint32(0xFFFFF000)) | (golden[:1000] & np.uint32(0xFFF))
    keys = rng.integers(0, 2**32, (n, 3), dtype=np.uint64).astype(np.uint32)
    for weights in ((0.6, 0.3, 0.1), (1 / 3, 0.7, 2.0)):
        want = spec.compute_reward(golden, keys, targets, 17, weights)
        w = np.array(weights, np.float32)
        got = np.array(
            [lib().hasher_host_reward(int(golden[i]), keys[i].ctypes.data, int(targets[i]), 17, w.ctypes.data)
             for i in range(n)], np.float32,
        )  # fmt: skip
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("n", [1, 5, 8, 129, 256, 1000, 4099])
def test_device_pairwise_sums_equal_numpy(n):
    a = (np.random.default_rng(n).random(n) * 3).astype(np.float32)
    leaves, program = layout.pairwise_plan(n)
    leaves32, program32 = leaves.reshape(-1).astype(np.uint32), program.astype(np.uint32)
    scratch = np.zeros(len(leaves), np.uint32)
    got = lib().hasher_host_pairwise(
        a.view(np.uint32).ctypes.data, leaves32.ctypes.data, len(leaves), program32.ctypes.data, len(program),
        scratch.ctypes.data,
    )  # fmt: skip
    assert np.float32(got) == a.sum()


# --- the driver: launches, progress, the store, the bus ------------------------------------------------


class FakeTime:
    """A clock the launcher advances: a launch lasts ``per_generation`` seconds for each generation
    its busiest block ran (as on a GPU, where blocks run side by side)."""

    def __init__(self, per_generation: float) -> None:
        self.now, self.per_generation = 0.0, per_generation

    def __call__(self) -> float:
        return self.now

    def launcher(self, inner: HostLauncher):
        time = self

        class Timed:
            def __getattr__(self, name):
                return getattr(inner, name)

            def launch(self, blocks, threads, args):
                inner.launch(blocks, threads, args)
                time.now += time.per_generation * int(args[5][layout.COUNTER_LONGEST])

        return Timed()


@pytest.mark.device_search
def test_launches_grow_to_the_target_length_and_never_past_it():
    time = FakeTime(per_generation=0.01)
    driver = DeviceSearch(
        lambda: time.launcher(host_launcher(standin=True, blocks=4)), launch_seconds=0.25, clock=time
    )
    slots, targets = frames(40, seed=5)
    search_frames(slots, targets, SearchConfig(difficulty_bits=16, population=32), None, driver=driver)
    sizes = driver.stats.generations_per_launch
    assert sizes[:2] == [1, device_search.LAUNCH_GROWTH]  # growing at most 16-fold per launch
    assert 24 <= sizes[2] <= 25  # then 0.25 s ÷ 0.01 s per generation
    assert max(launch.device_seconds for launch in driver.stats.launch_log) <= 0.25 + 1e-9
    assert driver.stats.launch_log[-1].waiting == 0 and driver.stats.launches > 5


@pytest.mark.device_search
def test_every_launch_commits_its_frames_and_reports_progress_before_the_next():
    launcher = host_launcher(standin=True, blocks=3)
    store = DictStore(moment=lambda: launcher.launches)
    reports = []
    config = SearchConfig(difficulty_bits=9, population=32)
    slots, targets = frames(60, seed=6)
    driver = DeviceSearch(launcher, generations_per_launch=3)
    r = search_frames(
        slots,
        targets,
        config,
        None,
        store=store,
        driver=driver,
        progress=reports.append,
        progress_every_s=0.0,
    )
    launches = driver.stats.launches
    assert len(reports) == launches + 1  # one per launch, one at the end
    assert [p.frames_done for p in reports] == sorted(p.frames_done for p in reports)
    assert reports[-1].frames_done == 60 and reports[-1].evaluations == r.run_evaluations > 0
    moments = [m for m, _ in store.commits]
    assert moments == sorted(set(moments)) and sum(n for _, n in store.commits) == 60  # one commit per launch
    assert len(r.history.elapsed_s) >= 2
    log = driver.stats.launch_log
    assert all(launch.cycle_seconds >= launch.device_seconds > 0 for launch in log)
    assert [launch.waiting for launch in log] == sorted((x.waiting for x in log), reverse=True)
    assert log[0].waiting > 0 and log[-1].waiting == 0
    assert sum(x.finished for x in log) == 60 and sum(x.evaluations for x in log) == r.run_evaluations


def test_the_steady_pace_leaves_out_the_launches_that_ran_short_of_frames():
    stats = device_search.DriverStats(
        launch_log=[
            device_search.LaunchStats(1, 0.1, 0.2, 100, 0, waiting=50),
            device_search.LaunchStats(16, 0.5, 0.6, 1000, 10, waiting=5),
            device_search.LaunchStats(16, 0.5, 0.5, 300, 45, waiting=0),  # the tail: blocks idled
        ]
    )
    assert stats.steady_evaluations_per_s() == 1100 / 0.8
    assert stats.launches == 3 and stats.generations_per_launch == [1, 16, 16]


@pytest.mark.device_search
def test_bus_traffic_is_the_frames_the_records_and_a_few_counters():
    config = SearchConfig(difficulty_bits=12)
    slots, targets = frames(256, seed=7)
    driver = host_driver(standin=True, blocks=8, generations=None)
    r = search_frames(slots, targets, config, None, driver=driver)
    s = driver.stats
    # once: the config, the slots' empty state, the history of the generations reached; per frame:
    # its queue entry and its record; per launch: the counters each way
    history = len(r.history.generation_frames) * (4 + 8 + 8)  # as far as any frame got
    once_up = layout.config_words(config).nbytes + 8 * layout.STATE_WORDS * 4
    counters = layout.COUNTERS * 8
    assert s.bytes_to_device == once_up + 256 * layout.QUEUE_WORDS * 4 + s.launches * counters
    assert s.bytes_to_host == history + 256 * layout.RECORD_WORDS * 4 + s.launches * counters
    assert s.evaluations == r.run_evaluations
    assert s.bus_bytes / s.evaluations < 0.1


def test_the_zero_cost_device_models_a_launchs_bookkeeping_for_the_benchmark():
    """bench_search measures the driver's host work at an H100's launch sizes on this stand-in: it
    must finish every frame after its generations and count the evaluations a device would."""
    config = SearchConfig(difficulty_bits=17)
    launcher = device_search_host.ZeroCostLauncher(blocks=7, generations_per_frame=30)
    driver = DeviceSearch(launcher, generations_per_launch=11)
    slots, targets = frames(40, seed=12)
    r = search_frames(slots, targets, config, None, driver=driver)
    assert (r.generations == 30).all() and r.solved.all() and (r.golden >> 15 == targets).all()
    per_frame = 256 + 29 * 192  # generation 0 evaluates everyone, then the elites keep their goldens
    assert (r.evaluations == per_frame).all() and r.run_evaluations == 40 * per_frame
    assert driver.stats.launches == launcher.launches >= -(-40 * 30 // (7 * 11))  # 1,200 generations


@pytest.mark.device_search
def test_history_grows_with_the_generations_frames_reach(monkeypatch):
    monkeypatch.setattr(device_search, "HISTORY_START", 2)
    config = SearchConfig(difficulty_bits=14, population=16, max_generations=70)
    slots, targets = frames(30, seed=8)
    cpu = search_frames(slots, targets, config, standin_evaluate)
    device = search_frames(slots, targets, config, None, driver=host_driver(standin=True, generations=9))
    assert_same_results(cpu, device)
    assert len(device.history.generation_frames) > 9


def test_a_launch_that_does_nothing_is_an_error_not_a_hang():
    require_host_build(True)

    class Idle(HostLauncher):
        def launch(self, blocks, threads, args):
            pass

    slots, targets = frames(3)
    with pytest.raises(RuntimeError, match=r"made no progress in launch 1 \(0 of 3 frames finished"):
        search_frames(slots, targets, SearchConfig(), None, driver=DeviceSearch(Idle(standin=True)))


def test_more_generations_than_the_device_counts_is_refused_before_any_launch():
    launcher = host_launcher(standin=True)
    slots, targets = frames(2)
    with pytest.raises(ValueError, match="max_generations=4294967296 is beyond the device search"):
        search_frames(
            slots, targets, SearchConfig(max_generations=2**32), None, driver=DeviceSearch(launcher)
        )
    assert launcher.launches == 0


@pytest.mark.parametrize(
    ("threads", "registers", "blocks"),
    [(192, 80, 4), (256, 80, 3), (192, 88, 3), (96, 80, 8), (32, 40, 32), (256, 255, 1)],
)
def test_resident_blocks_follow_the_register_and_thread_limits_of_an_sm(threads, registers, blocks):
    assert blocks_per_sm(threads, registers, 6000, device_search.SmLimits()) == blocks


def test_blocks_have_one_thread_per_member_evaluated_each_generation():
    assert device_search.block_threads(SearchConfig()) == 192  # 256 - 64 elites keep their goldens
    assert device_search.block_threads(SearchConfig(strategy="scan")) == 256
    assert device_search.block_threads(SearchConfig(population=100)) == 96
    assert device_search.block_threads(SearchConfig(population=5000)) == 256


# --- static checks of the CUDA build (no GPU needed) --------------------------------------------------


def test_every_constant_the_search_source_uses_is_generated():
    used = set(re.findall(r"\bHASHER_[A-Z0-9_]+\b", device_search.SOURCE_PATH.read_text()))
    source = device_search.search_source()
    defined = set(re.findall(r"#define (HASHER_[A-Z0-9_]+)", source))
    # every HASHER_* name is #defined somewhere in the source but the host build's -D switch
    assert used - defined == {"HASHER_SEARCH_STANDIN"}, sorted(used - defined)


@pytest.fixture(scope="module")
def search_sm90(tmp_path_factory):
    _require("nvcc")
    return cuda_build.build_cubin(
        tmp_path_factory.mktemp("search_sm90"),
        "sm_90",
        source=device_search.search_source(),
        name="device_search",
        options=("-std=c++17", *device_search.FLOAT_OPTIONS),
    )


@pytest.mark.slow
def test_sm90_search_kernel_has_no_spills_and_80_registers_at_most(search_sm90):
    cubin, report = search_sm90
    used = cuda_build.kernel_resources(report)
    assert set(used) == {device_search.KERNEL}, report
    k = used[device_search.KERNEL]
    assert (k.stack_frame_bytes, k.spill_store_bytes, k.spill_load_bytes) == (0, 0, 0), report
    # <= 80 registers: 4 blocks of 192 threads (GRPO at the default population) fit one Hopper SM
    assert 0 < k.registers <= 80, report
    _require("cuobjdump")
    code = cuda_build.sass(cubin)[device_search.KERNEL]
    assert not cuda_build.local_memory(code)
    assert sum(ins.opcode.startswith("BAR") for ins in code) >= 10  # the phases' barriers are there


@pytest.mark.slow
def test_the_search_kernels_float_arithmetic_is_never_contracted_or_approximated(tmp_path):
    _require("nvcc")
    src = tmp_path / "search.cu"
    src.write_text(device_search.search_source())
    ptx = tmp_path / "search.ptx"
    done = subprocess.run(
        [cuda_build.tool("nvcc"), "-ptx", "-arch=sm_90", "-std=c++17", *device_search.FLOAT_OPTIONS,
         "-o", str(ptx), str(src)], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = ptx.read_text()
    float_ops = re.findall(r"\b(fma|mad|add|sub|mul|div|sqrt|rcp)(\.[a-z]+)*\.f32\b", text)
    assert float_ops
    assert not re.search(r"\b(fma|mad)[.a-z]*\.f32\b", text)  # no contraction
    assert not re.search(r"\.(approx|ftz)\b", text)  # IEEE division and square root, denormals kept
    assert re.search(r"\bdiv\.rn\.f32\b", text) and re.search(r"\bsqrt\.rn\.f32\b", text)


def test_the_numba_search_step_has_no_fused_multiply_add_or_fast_math():
    """The CPU side of the bit equality: Numba compiles the step's float32 arithmetic as written."""
    cpu = search_frames(*frames(2), SearchConfig(difficulty_bits=4, population=300), standin_evaluate)
    assert len(cpu) == 2
    step = fused.generation_step
    fresh = numba.njit(cache=False)(step.py_func)  # cached code cannot be inspected
    signature = step.signatures[0]
    fresh.compile(signature)
    asm, llvm = fresh.inspect_asm(signature), fresh.inspect_llvm(signature)
    assert all(op in asm for op in ("vaddss", "vmulss", "vdivss", "vsqrtss"))  # the float code is here
    assert not re.search(r"\bv?f(n)?m(add|sub)(132|213|231)", asm)
    assert not re.search(r"llvm\.fma|fmuladd|\bf(add|sub|mul|div) (fast|contract|reassoc)", llvm)
    for dispatcher in (fused.generation_step, fused._grpo_frame, fused._score_frame, fused.write_mutant):
        assert not dispatcher.targetoptions.get("fastmath")


def test_nvrtc_compiles_the_search_with_the_drivers_options():
    ptx = nvrtc_ptx(device_search.search_source(), "device_search.cu", device_search.FLOAT_OPTIONS)
    assert f".entry {device_search.KERNEL}(" in ptx
    assert not re.search(r"\b(fma|mad)[.a-z]*\.f32\b", ptx) and not re.search(r"\.(approx|ftz)\b", ptx)


# --- on a GPU (scripts/gpu_check.sh) ------------------------------------------------------------------

gpu = pytest.mark.skipif(not sha256.cuda_available(), reason="needs CuPy and a CUDA device")

GPU_CASES = {
    "grpo, 12 bits": SearchConfig(difficulty_bits=12),
    "scan, 12 bits": SearchConfig(difficulty_bits=12, strategy="scan"),
    "grpo, schedule, odd population": SearchConfig(
        difficulty_bits=11, difficulty_schedule=(5, 8), population=100
    ),
    "grpo, exhausted": SearchConfig(difficulty_bits=14, population=64, max_generations=5),
}


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("case", list(GPU_CASES))
def test_gpu_device_search_finds_exactly_the_cpu_searchs_seeds(case):
    config = GPU_CASES[case]
    slots, targets = frames(300, seed=len(case), duplicates=20)
    cpu = search_frames(slots, targets, config, cpu_evaluate)
    driver = DeviceSearch()
    device = search_frames(slots, targets, config, None, driver=driver)
    assert_same_results(cpu, device)
    s = driver.stats
    assert s.launches >= 1 and max(launch.device_seconds for launch in s.launch_log) < 1.0


@pytest.mark.gpu
@gpu
def test_gpu_one_generation_per_launch_changes_nothing_and_blocks_fill_the_device():
    from hasher_resources.sha256.device_search import CupyLauncher

    config = SearchConfig(difficulty_bits=10, population=64)
    slots, targets = frames(2000, seed=3)
    launcher = CupyLauncher(0)
    threads = device_search.block_threads(config)
    resident = launcher.resident_blocks(threads)
    assert resident >= int(launcher.properties["multiProcessorCount"])
    assert launcher.local_bytes == 0, "the kernel spills to local memory on this device"
    cpu = search_frames(slots, targets, config, cpu_evaluate)
    one = DeviceSearch(launcher, generations_per_launch=1)
    assert_same_results(cpu, search_frames(slots, targets, config, None, driver=one))
    assert one.stats.blocks == min(resident, 2000) and one.stats.launches > 5
