"""The CPU backend's SHA-NI path: the 21-pass recursion and the midstate nonce scan written with the
x86 SHA extensions (``sha256rnds2``, ``sha256msg1``, ``sha256msg2``), emitted from Numba as LLVM
intrinsics (``../shared/reference/sha-ni-numba.md``).

Why a second path: on CPUs with SHA-NI, OpenSSL's single-stream SHA-NI hashlib is as fast as the
portable SIMD kernel in ``cpu``. One SHA-NI stream is bound by the latency of ``sha256rnds2``;
``STREAMS`` independent hashes interleaved in the IR keep its pipeline full, which is about 2.4×
hashlib per core. The interleave must be written into the IR: neither LLVM nor the CPU overlaps
separate calls.

Safety: compiling any function that contains these intrinsics for a target without ``+sha`` aborts
the process inside LLVM (not a Python exception). So nothing here has an eager signature and
nothing compiles at import; ``cpu.select_kernel`` calls in here only after ``sha_ni_usable()``
said yes. The intrinsic factory and its ``@njit`` callers stay in this one file, because Numba's
cache is stamped with the caller's source file only.

State layout (Intel's): a SHA-256 state lives in two vectors, lanes low to high ABEF = [f, e, b, a]
and CDGH = [h, g, d, c]; message vectors hold four big-endian words, lane 0 first.
"""

from __future__ import annotations

import functools
import platform

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from hasher_core import design

from .cpu import (  # the DESIGN §4.2 constants as the SIMD kernel derives them, and its scalar helpers
    _HIGH_CLZ_XOR,
    _K,
    _LOW_CLZ_LIMIT,
    _LOW_CLZ_XOR,
    _PASSES,
    _PHASE2,
    _PHASE3,
    _STAB0,
    _bswap32,
    _clz32,
    _rotr,
)

#: Hashes interleaved in one call (the reference measured 3 and 4 as equal; 3 does not spill).
STREAMS = 3

#: Groups of STREAMS evaluations handed to a worker at a time (dynamic scheduling, ~50 µs each): a
#: worker whose core is taken by another process leaves its share to the others.
EVALUATE_GROUPS_PER_ITEM = 16

#: Groups of STREAMS nonces per parallel work item of a scan (scratch allocated once per item).
SCAN_GROUPS_PER_ITEM = 256

_I32 = ir.IntType(32)
_V4 = ir.VectorType(_I32, 4)
_DIGEST_WORDS = 8
_HEADER_WORDS = design.HEADER_BYTES // 4
_WK_WORDS = 68  # 64 W+K words and 4 of padding: the two-round loads read lanes 0–1 of 4i+2


@functools.cache
def sha_ni_usable() -> tuple[bool, str]:
    """Whether SHA-NI code can be compiled *and* run here, and why not; asked on every kernel call,
    answered once per process (the CPU and Numba's target settings do not change while it runs).

    Both must hold: the CPU has the SHA extensions (CPUID, read by LLVM), and Numba's own target
    allows them: when ``NUMBA_CPU_FEATURES`` is set it replaces the host's features and must contain
    ``+sha``; ``NUMBA_CPU_NAME=generic`` without features means none. Returns (usable, reason).
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False, f"the CPU is {platform.machine()}, not x86-64"
    if numba.config.DISABLE_JIT:
        return False, "NUMBA_DISABLE_JIT is set (the SHA-NI path is compiled code only)"
    import llvmlite.binding as llvm

    host = llvm.get_host_cpu_features()
    if not host.get("sha", False):
        return False, "this CPU has no SHA extensions (no 'sha_ni' in /proc/cpuinfo flags)"
    features = numba.config.CPU_FEATURES
    if features is not None:
        listed = {f.strip() for f in features.split(",") if f.strip()}
        if "+sha" not in listed:
            return False, f"NUMBA_CPU_FEATURES={features!r} does not enable +sha"
    return True, "the CPU has SHA extensions and Numba targets them"


def _v4(values) -> ir.Constant:
    return ir.Constant(_V4, [ir.Constant(_I32, int(v) & 0xFFFFFFFF) for v in values])


def _mask(*lanes: int) -> ir.Constant:
    return ir.Constant(ir.VectorType(_I32, len(lanes)), [ir.Constant(_I32, i) for i in lanes])


class _Emitter:
    """Emits interleaved SHA-NI compressions into one function's IR."""

    def __init__(self, builder: ir.IRBuilder) -> None:
        module = builder.module
        fn3 = ir.FunctionType(_V4, [_V4, _V4, _V4])
        fn2 = ir.FunctionType(_V4, [_V4, _V4])
        self.b = builder
        self.rnds2 = cgutils.get_or_insert_function(module, fn3, "llvm.x86.sha256rnds2")
        self.msg1 = cgutils.get_or_insert_function(module, fn2, "llvm.x86.sha256msg1")
        self.msg2 = cgutils.get_or_insert_function(module, fn2, "llvm.x86.sha256msg2")
        self.k = [_v4(design.SHA256_K[4 * i : 4 * i + 4]) for i in range(16)]
        iv = design.SHA256_IV
        self.iv = (_v4([iv[5], iv[4], iv[1], iv[0]]), _v4([iv[7], iv[6], iv[3], iv[2]]))
        self.undef = ir.Constant(_V4, ir.Undefined)

    def i64(self, value: int) -> ir.Constant:
        return ir.Constant(ir.IntType(64), value)

    def rotr(self, x, n: int):
        """32-bit rotate right by a constant (LLVM folds the pair into one rotate)."""
        return self.b.or_(self.b.lshr(x, ir.Constant(_I32, n)), self.b.shl(x, ir.Constant(_I32, 32 - n)))

    def jitter(self, p, key, slots):
        """DESIGN §4.2's jitter word j of pass ``p`` (i64) from the pass key (i32) and slots 1–3."""
        b = self.b
        d = b.xor(key, slots[2])
        late = b.select(
            b.icmp_unsigned(">=", d, ir.Constant(_I32, _LOW_CLZ_LIMIT)),
            b.xor(key, ir.Constant(_I32, _LOW_CLZ_XOR)),
            b.xor(d, ir.Constant(_I32, _HIGH_CLZ_XOR)),
        )
        middle = b.xor(self.rotr(key, 16), slots[1])
        early = b.xor(key, slots[0])
        phase2 = b.icmp_signed(">=", p, self.i64(_PHASE2))
        phase3 = b.icmp_signed(">=", p, self.i64(_PHASE3))
        return b.select(phase3, late, b.select(phase2, middle, early))

    def mutation(self, j):
        """The XOR masks of message vectors 2 and 3 for jitter word ``j``: word 9+i ^= rotr(j, 32 - 8i),
        words 9–11 are lanes 1–3 of vector 2 and word 12 is lane 0 of vector 3."""
        zero = ir.Constant(_I32, 0)
        masks = []
        for lanes in ((zero, j, self.rotr(j, 24), self.rotr(j, 16)), (self.rotr(j, 8), zero, zero, zero)):
            vector = ir.Constant(_V4, ir.Undefined)
            for lane, value in enumerate(lanes):
                vector = self.b.insert_element(vector, value, ir.Constant(_I32, lane))
            masks.append(vector)
        return masks

    def load(self, data, offset):
        ptr = self.b.bitcast(self.b.gep(data, [offset]), _V4.as_pointer())
        return self.b.load(ptr, align=4)

    def store(self, value, data, offset) -> None:
        ptr = self.b.bitcast(self.b.gep(data, [offset]), _V4.as_pointer())
        self.b.store(value, ptr, align=4)

    def to_state(self, abcd, efgh):
        """(ABEF, CDGH) from digest words [a b c d], [e f g h]."""
        return (
            self.b.shuffle_vector(abcd, efgh, _mask(5, 4, 1, 0)),
            self.b.shuffle_vector(abcd, efgh, _mask(7, 6, 3, 2)),
        )

    def to_words(self, state):
        """Digest words ([a b c d], [e f g h]) from (ABEF, CDGH)."""
        abef, cdgh = state
        return (
            self.b.shuffle_vector(abef, cdgh, _mask(3, 2, 7, 6)),
            self.b.shuffle_vector(abef, cdgh, _mask(1, 0, 5, 4)),
        )

    def rounds(self, states, messages, first: int = 0, last: int = 16):
        """Round groups ``first … last-1`` (four rounds each) of every stream, interleaved group by
        group, without the feed-forward. Intel's sequence: W+K for four rounds, two ``rnds2``, the
        schedule advanced with ``msg1``/``msg2`` a few groups ahead.

        ``states``: per stream (ABEF, CDGH); ``messages``: per stream the four message vectors
        (words 0–3, 4–7, 8–11, 12–15) as they stand before group ``first``. Returns the states and
        the message vectors after group ``last-1`` (a later call can go on from there)."""
        b = self.b
        s0 = [s[0] for s in states]
        s1 = [s[1] for s in states]
        m = [list(msg) for msg in messages]
        for i in range(first, last):
            for k in range(len(states)):
                wk = b.add(m[k][i & 3], self.k[i])
                s1[k] = b.call(self.rnds2, [s1[k], s0[k], wk])
                if 3 <= i <= 14:
                    nxt = (i + 1) & 3
                    carry = b.shuffle_vector(m[k][(i - 1) & 3], m[k][i & 3], _mask(1, 2, 3, 4))
                    m[k][nxt] = b.call(self.msg2, [b.add(m[k][nxt], carry), m[k][i & 3]])
                upper = b.shuffle_vector(wk, self.undef, _mask(2, 3, 2, 3))  # rounds 4i+2, 4i+3
                s0[k] = b.call(self.rnds2, [s0[k], s1[k], upper])
                if 1 <= i <= 12:
                    prev = (i - 1) & 3
                    m[k][prev] = b.call(self.msg1, [m[k][prev], m[k][i & 3]])
        return [(s0[k], s1[k]) for k in range(len(states))], m

    def feed_forward(self, states, initial):
        """The end of a compression: each stream's state plus the state its block started from."""
        b = self.b
        return [(b.add(s[0], i[0]), b.add(s[1], i[1])) for s, i in zip(states, initial, strict=True)]

    def compress(self, states, messages):
        """One 64-round compression of every stream (``rounds`` over all 16 groups, then the
        feed-forward). Returns the new states."""
        return self.feed_forward(self.rounds(states, messages)[0], states)

    def compress_scheduled(self, states, data, offsets):
        """A compression whose W+K words (64, plus 4 of padding) are already in memory at
        ``offsets``: no message schedule and no shuffles, only loads and ``rnds2``; on Intel cores,
        where SHA instructions and shuffles share one port, that is what makes it cheaper."""
        b = self.b
        s0 = [s[0] for s in states]
        s1 = [s[1] for s in states]
        for i in range(16):
            for k in range(len(states)):
                lo = self.load(data, b.add(offsets[k], ir.Constant(offsets[k].type, 4 * i)))
                s1[k] = b.call(self.rnds2, [s1[k], s0[k], lo])
                hi = self.load(data, b.add(offsets[k], ir.Constant(offsets[k].type, 4 * i + 2)))
                s0[k] = b.call(self.rnds2, [s0[k], s1[k], hi])
        return [(b.add(s0[k], states[k][0]), b.add(s1[k], states[k][1])) for k in range(len(states))]

    def rehash(self, states):
        """SHA-256 of each stream's 32-byte digest (the second hash of a double SHA-256), from the IV."""
        pad = (_v4([0x80000000, 0, 0, 0]), _v4([0, 0, 0, 256]))
        messages = [(*self.to_words(state), *pad) for state in states]
        return self.compress([self.iv] * len(states), messages)

    def header_tail(self, words_of):
        """Block 2 of an 80-byte header per stream: header words 16–19, then padding (640 bits)."""
        return [(words_of(k), _v4([0x80000000, 0, 0, 0]), _v4([0, 0, 0, 0]), _v4([0, 0, 0, 640]))
                for k in range(STREAMS)]  # fmt: skip


def _pointer(context, builder, array_type, value):
    return context.make_array(array_type)(context, builder, value).data


@intrinsic
def _evaluate_streams(typingctx, words, block2_wk, jitter_slots, keys):
    """The whole DESIGN §4.2 recursion of STREAMS evaluations, interleaved, in registers.

    Flat uint32 buffers, stream k's part at a fixed place: ``words`` its header's 20 big-endian
    words at 20k, ``block2_wk`` its block-2 W+K at 68k (``_block2_wk``), ``jitter_slots`` its slots
    1–3 at 3k; it writes its 22 per-pass keys to ``keys`` at 22k (pass 21's key is the golden).

    Rounds 0–7 of block 1 read only words 0–7, which no pass changes: they run once, before the
    pass loop. Passes change only words 9–12 (lanes 1–3 of message vector 2, lane 0 of vector 3),
    so inside the loop nothing goes through memory but the key stores."""
    sig = types.none(words, block2_wk, jitter_slots, keys)

    def codegen(context, builder, signature, args):
        e = _Emitter(builder)
        data, wk, js, out = (
            _pointer(context, builder, t, a) for t, a in zip(signature.args, args, strict=True)
        )
        msgs = [[e.load(data, e.i64(_HEADER_WORDS * k + 4 * j)) for j in range(4)] for k in range(STREAMS)]
        slots = [
            [builder.load(builder.gep(js, [e.i64(3 * k + j)])) for j in range(3)] for k in range(STREAMS)
        ]
        early, early_msgs = e.rounds([e.iv] * STREAMS, msgs, 0, 2)  # with its msg1 of vectors 0 and 1
        changing = [[cgutils.alloca_once_value(builder, m[2]), cgutils.alloca_once_value(builder, m[3])]
                    for m in msgs]  # fmt: skip
        with cgutils.for_range(builder, e.i64(_PASSES + 1)) as loop:
            current = [
                [*early_msgs[k][:2], *(builder.load(cell) for cell in changing[k])] for k in range(STREAMS)
            ]
            states = e.feed_forward(e.rounds(early, current, 2, 16)[0], [e.iv] * STREAMS)
            states = e.compress_scheduled(states, wk, [e.i64(_WK_WORDS * k) for k in range(STREAMS)])
            states = e.rehash(states)
            for k in range(STREAMS):
                key = builder.extract_element(e.to_words(states[k])[0], ir.Constant(_I32, 0))
                builder.store(key, builder.gep(out, [builder.add(e.i64((_PASSES + 1) * k), loop.index)]))
                j = e.jitter(loop.index, key, slots[k])
                for cell, value, mask in zip(changing[k], current[k][2:], e.mutation(j), strict=True):
                    builder.store(builder.xor(value, mask), cell)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _double_sha_midstate(typingctx, midstate, blocks, offsets, out, out_offsets):
    """Double SHA-256 of STREAMS headers that share bytes 0–63: ``midstate`` uint32[8] is the state
    after them, ``blocks`` uint32[*] holds each header's words 16–19 at ``offsets``; the 8 digest
    words of the second hash go to ``out`` at ``out_offsets``. Two compressions per header."""
    sig = types.none(midstate, blocks, offsets, out, out_offsets)

    def codegen(context, builder, signature, args):
        e = _Emitter(builder)
        mid = _pointer(context, builder, signature.args[0], args[0])
        data = _pointer(context, builder, signature.args[1], args[1])
        result = _pointer(context, builder, signature.args[3], args[3])
        zero = ir.Constant(ir.IntType(64), 0)
        start = e.to_state(e.load(mid, zero), e.load(mid, ir.Constant(ir.IntType(64), 4)))
        tail = e.header_tail(lambda k: e.load(data, builder.extract_value(args[2], k)))
        states = e.rehash(e.compress([start] * STREAMS, tail))
        for k in range(STREAMS):
            at = builder.extract_value(args[4], k)
            abcd, efgh = e.to_words(states[k])
            e.store(abcd, result, at)
            e.store(efgh, result, builder.add(at, ir.Constant(at.type, 4)))
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True)
def _block2_wk(words, row, wk, at):  # pragma: no cover - compiled
    """``wk[at : at+64]`` = W+K of block 2 of header ``row`` (words 16–19, then padding for 640
    bits), ``wk[at+64 : at+68]`` = 0 (read past by the last two-round load). No pass changes these
    words (DESIGN §4.2 mutates words 9–12 only), so this runs once per evaluation."""
    w = np.empty(64, dtype=np.uint32)
    for t in range(4):
        w[t] = words[row, 16 + t]
    w[4] = np.uint32(0x80000000)
    for t in range(5, 15):
        w[t] = np.uint32(0)
    w[15] = np.uint32(640)
    for t in range(16, 64):
        x = w[t - 15]
        y = w[t - 2]
        s0 = _rotr(x, 7) ^ _rotr(x, 18) ^ np.uint32(x >> 3)
        s1 = _rotr(y, 17) ^ _rotr(y, 19) ^ np.uint32(y >> 10)
        w[t] = np.uint32(w[t - 16] + s0 + w[t - 7] + s1)
    for t in range(64):
        wk[at + t] = np.uint32(w[t] + _K[t])
    for t in range(64, _WK_WORDS):
        wk[at + t] = np.uint32(0)


def _evaluate_groups_py(words, jitter_slots, golden, keys):  # pragma: no cover - compiled
    """``words`` uint32[N, 20] big-endian header words, ``jitter_slots`` uint32[N, 3] (slots 1–3).
    Writes ``golden[N]`` and ``keys[N, 3]``. Evaluations run STREAMS at a time, interleaved; the
    last group repeats row N-1 to fill its streams (same result written twice)."""
    n = words.shape[0]
    for group in prange((n + STREAMS - 1) // STREAMS):
        header = np.empty(STREAMS * _HEADER_WORDS, dtype=np.uint32)
        wk = np.empty(STREAMS * _WK_WORDS, dtype=np.uint32)
        slots = np.empty(STREAMS * 3, dtype=np.uint32)
        out = np.empty(STREAMS * (_PASSES + 1), dtype=np.uint32)
        rows = np.empty(STREAMS, dtype=np.int64)
        for k in range(STREAMS):
            rows[k] = min(group * STREAMS + k, n - 1)
            for t in range(_HEADER_WORDS):
                header[k * _HEADER_WORDS + t] = words[rows[k], t]
            for t in range(3):
                slots[3 * k + t] = jitter_slots[rows[k], t]
            _block2_wk(words, rows[k], wk, k * _WK_WORDS)
        _evaluate_streams(header, wk, slots, out)
        for k in range(STREAMS):
            base = k * (_PASSES + 1)
            golden[rows[k]] = out[base + _PASSES]
            for t in range(_PASSES - _STAB0):
                keys[rows[k], t] = out[base + _STAB0 + t]


def _scan_windows_py(midstate, tail, starts, window_size, skip, count, zero_bits):  # pragma: no cover
    """The SHA-NI twin of ``cpu._scan_windows_blocks_py`` (same arguments, same ``zero_bits``
    uint8[≥count] output): leading zero bits of the byte-reversed mining hash per position."""
    groups = (count + STREAMS - 1) // STREAMS
    for item in prange((groups + SCAN_GROUPS_PER_ITEM - 1) // SCAN_GROUPS_PER_ITEM):
        blocks = np.empty(STREAMS * 4, dtype=np.uint32)
        out = np.empty(STREAMS * _DIGEST_WORDS, dtype=np.uint32)
        positions = np.empty(STREAMS, dtype=np.int64)
        for k in range(STREAMS):
            blocks[4 * k] = tail[0]
            blocks[4 * k + 1] = tail[1]
            blocks[4 * k + 2] = tail[2]
        last = min(groups, (item + 1) * SCAN_GROUPS_PER_ITEM)
        for group in range(item * SCAN_GROUPS_PER_ITEM, last):
            for k in range(STREAMS):
                q = min(group * STREAMS + k, count - 1)
                positions[k] = q
                position = skip + q
                window = position // window_size
                nonce = (starts[window] + position - window * window_size) & 0xFFFFFFFF
                # The nonce sits little-endian in bytes 76–79, so the big-endian message word is swapped.
                blocks[4 * k + 3] = _bswap32(np.uint32(nonce))
            _double_sha_midstate(midstate, blocks, (0, 4, 8), out, (0, 8, 16))
            for k in range(STREAMS):
                # A Bitcoin hash is read byte-reversed: digest word 7, byte-swapped, holds its top bits.
                bits = 0
                for t in range(7, -1, -1):
                    z = _clz32(_bswap32(out[_DIGEST_WORDS * k + t]))
                    bits += z
                    if z < 32:
                        break
                zero_bits[positions[k]] = min(bits, 255)


_evaluate_groups = njit(parallel=True, cache=True)(_evaluate_groups_py)
#: One-thread twin for evaluations too small to share the worker pool (``cpu.serial_call``).
_evaluate_groups_serial = njit(cache=True)(_evaluate_groups_py)
_scan_windows = njit(parallel=True, cache=True)(_scan_windows_py)
#: One-thread twin for scans too small to share the worker pool (as in ``cpu``).
_scan_windows_serial = njit(cache=True)(_scan_windows_py)


def evaluate_words(words: np.ndarray, jitter_slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Goldens uint32[N] and keys uint32[N, 3] for ``words`` uint32[N, 20] (big-endian header words,
    C-contiguous) and ``jitter_slots`` uint32[N, 3]. Call only when ``sha_ni_usable()``."""
    n = words.shape[0]
    golden = np.empty(n, dtype=np.uint32)
    keys = np.empty((n, len(design.STABILITY_PASSES)), dtype=np.uint32)
    if n:
        from .cpu import serial_call

        args = (np.ascontiguousarray(words), np.ascontiguousarray(jitter_slots), golden, keys)
        if serial_call(n):
            _evaluate_groups_serial(*args)
        else:
            with numba.parallel_chunksize(EVALUATE_GROUPS_PER_ITEM):
                _evaluate_groups(*args)
    return golden, keys


def scan_windows(
    midstate: np.ndarray,
    tail: np.ndarray,
    starts: np.ndarray,
    window_size: int,
    skip: int,
    count: int,
    zero_bits: np.ndarray,
    serial: bool,
) -> None:
    """Fill ``zero_bits[:count]`` like ``cpu.scan_midstate_windows`` does (``midstate`` uint32[8],
    ``tail`` uint32[3], ``starts`` int64). Call only when ``sha_ni_usable()``."""
    if count:
        (_scan_windows_serial if serial else _scan_windows)(
            midstate, tail, starts, window_size, skip, count, zero_bits
        )
