"""The CPU backend's SHA-NI path: the 21-pass recursion and the midstate nonce scan written with the
x86 SHA extensions (``sha256rnds2``, ``sha256msg1``, ``sha256msg2``), emitted from Numba as LLVM
intrinsics (``docs/sha-ni.md``).

Why a second path: on CPUs with SHA-NI, OpenSSL's single-stream SHA-NI hashlib is as fast as the
portable SIMD kernel in ``cpu_simd``. One SHA-NI stream is bound by the latency of ``sha256rnds2``
(4 cycles on AMD Zen 5, which issues one per cycle); independent hashes interleaved in the IR keep
its pipeline full. The interleave must be written into the IR: neither LLVM nor the CPU overlaps
separate calls. Each kernel is one intrinsic that owns its whole loop or recursion, reads and writes
the caller's arrays in place and keeps its scratch on the stack: nothing is allocated per group.

Safety: compiling any function that contains these intrinsics for a target without ``+sha`` aborts
the process inside LLVM (not a Python exception). So nothing here has an eager signature and
nothing compiles at import; ``cpu.select_kernel`` calls in here only after ``sha_ni_usable()``
said yes. The intrinsics and their ``@njit`` callers stay in this one file; the word constants
come from ``cpu_words``, which the kernels' cache stamp covers (``hasher_core.jit``).

State layout (Intel's): a SHA-256 state lives in two vectors, lanes low to high ABEF = [f, e, b, a]
and CDGH = [h, g, d, c]; message vectors hold four big-endian words, lane 0 first.
"""

from __future__ import annotations

import functools
import platform

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from hasher_core import design
from hasher_core.jit import njit

from .cpu_words import (
    HIGH_CLZ_XOR,
    LOW_CLZ_LIMIT,
    LOW_CLZ_XOR,
    PASSES,
    PHASE2,
    PHASE3,
    STABILITY_FIRST,
)

#: Evaluations interleaved in the recursion kernel (at the STREAM_OFFSETS of their passes) and nonces
#: in the scan kernel, measured on the standard AMD EPYC (docs/sha-ni.md §2.2): the scan, all of
#: whose blocks schedule their messages in registers, spills at 4.
EVALUATE_STREAMS = 6
SCAN_STREAMS = 3

#: Groups of EVALUATE_STREAMS evaluations handed to a worker at a time (dynamic scheduling, ~50 µs
#: each): a worker whose core is taken by another process leaves its share to the others.
EVALUATE_GROUPS_PER_ITEM = 10

#: Groups of SCAN_STREAMS nonces per parallel work item of a scan (its nonce list allocated once;
#: ~25 µs of work), handed out one at a time.
SCAN_GROUPS_PER_ITEM = 256

_I32 = ir.IntType(32)
_V4 = ir.VectorType(_I32, 4)
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


def _lanes(vector: ir.Constant) -> list[int]:
    return [int(c.constant) for c in vector.constant]


def _sigma0(x: int) -> int:
    x &= 0xFFFFFFFF
    return ((x >> 7 | x << 25) ^ (x >> 18 | x << 14) ^ (x >> 3)) & 0xFFFFFFFF


def _sigma1(x: int) -> int:
    x &= 0xFFFFFFFF
    return ((x >> 17 | x << 15) ^ (x >> 19 | x << 13) ^ (x >> 10)) & 0xFFFFFFFF


def _mask(*lanes: int) -> ir.Constant:
    return ir.Constant(ir.VectorType(_I32, len(lanes)), [ir.Constant(_I32, i) for i in lanes])


class _Emitter:
    """Emits interleaved SHA-NI compressions into one function's IR."""

    def __init__(self, builder: ir.IRBuilder) -> None:
        module = builder.module
        fn3 = ir.FunctionType(_V4, [_V4, _V4, _V4])
        fn2 = ir.FunctionType(_V4, [_V4, _V4])
        self.b = builder
        self._rnds2 = cgutils.get_or_insert_function(module, fn3, "llvm.x86.sha256rnds2")
        self._msg1 = cgutils.get_or_insert_function(module, fn2, "llvm.x86.sha256msg1")
        self._msg2 = cgutils.get_or_insert_function(module, fn2, "llvm.x86.sha256msg2")
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
            b.icmp_unsigned(">=", d, ir.Constant(_I32, LOW_CLZ_LIMIT)),
            b.xor(key, ir.Constant(_I32, LOW_CLZ_XOR)),
            b.xor(d, ir.Constant(_I32, HIGH_CLZ_XOR)),
        )
        middle = b.xor(self.rotr(key, 16), slots[1])
        early = b.xor(key, slots[0])
        phase2 = b.icmp_signed(">=", p, self.i64(PHASE2))
        phase3 = b.icmp_signed(">=", p, self.i64(PHASE3))
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

    def rnds2(self, cdgh, abef, wk):
        return self.b.call(self._rnds2, [cdgh, abef, wk])

    def msg1(self, w0_3, w4_7):
        """``sha256msg1``; folded here when both vectors are constants (LLVM cannot fold it)."""
        if isinstance(w0_3, ir.Constant) and isinstance(w4_7, ir.Constant):
            w = _lanes(w0_3) + _lanes(w4_7)
            return _v4([w[i] + _sigma0(w[i + 1]) for i in range(4)])
        return self.b.call(self._msg1, [w0_3, w4_7])

    def msg2(self, partial, w12_15):
        """``sha256msg2``; folded here when both vectors are constants."""
        if isinstance(partial, ir.Constant) and isinstance(w12_15, ir.Constant):
            x, w = _lanes(partial), _lanes(w12_15)
            out = [x[0] + _sigma1(w[2]), x[1] + _sigma1(w[3])]
            out += [x[2] + _sigma1(out[0] & 0xFFFFFFFF), x[3] + _sigma1(out[1] & 0xFFFFFFFF)]
            return _v4(out)
        return self.b.call(self._msg2, [partial, w12_15])

    def add(self, x, y):
        if isinstance(x, ir.Constant) and isinstance(y, ir.Constant):
            return _v4([u + v for u, v in zip(_lanes(x), _lanes(y), strict=True)])
        return self.b.add(x, y)

    def rounds(self, states, messages, first: int = 0, last: int = 32):
        """``rnds2`` steps ``first … last-1`` (step r: rounds 2r and 2r+1) of every stream, interleaved
        step by step, without the feed-forward. Intel's sequence: W+K for four rounds, two ``rnds2``,
        the schedule advanced with ``msg1``/``msg2`` a few groups ahead.

        ``states``: per stream (ABEF, CDGH) before step ``first`` (for an odd ``first``, the pair as
        the previous step left it: (CDGH, ABEF)); ``messages``: per stream the four message vectors
        (words 0–3, 4–7, 8–11, 12–15) as they stand then. Returns the state pairs and the message
        vectors after step ``last-1``: (ABEF, CDGH) after an even number of steps from 0."""
        b = self.b
        s0 = [s[0] for s in states]
        s1 = [s[1] for s in states]
        m = [list(msg) for msg in messages]
        for r in range(first, last):
            i = r // 2
            for k in range(len(states)):
                wk = self.add(m[k][i & 3], self.k[i])
                if r % 2 == 0:
                    s1[k] = self.rnds2(s1[k], s0[k], wk)
                    if 3 <= i <= 14:
                        nxt = (i + 1) & 3
                        carry = b.shuffle_vector(m[k][(i - 1) & 3], m[k][i & 3], _mask(1, 2, 3, 4))
                        m[k][nxt] = self.msg2(self.add(m[k][nxt], carry), m[k][i & 3])
                else:
                    upper = b.shuffle_vector(wk, self.undef, _mask(2, 3, 2, 3))  # rounds 4i+2, 4i+3
                    s0[k] = self.rnds2(s0[k], s1[k], upper)
                    if 1 <= i <= 12:
                        prev = (i - 1) & 3
                        m[k][prev] = self.msg1(m[k][prev], m[k][i & 3])
        return [(s0[k], s1[k]) for k in range(len(states))], m

    def schedule(self, message):
        """The 16 message vectors (W0–3 … W60–63) of one block from its first four, with
        ``msg1``/``msg2`` as in ``rounds`` but all at once (for a block whose W+K is kept)."""
        b = self.b
        w = list(message)
        for i in range(4, 16):
            t = self.msg1(w[i - 4], w[i - 3])
            t = self.add(t, b.shuffle_vector(w[i - 2], w[i - 1], _mask(1, 2, 3, 4)))
            w.append(self.msg2(t, w[i - 1]))
        return w

    def feed_forward(self, states, initial):
        """The end of a compression: each stream's state plus the state its block started from."""
        b = self.b
        return [(b.add(s[0], i[0]), b.add(s[1], i[1])) for s, i in zip(states, initial, strict=True)]

    def header_tail(self, words16):
        """Block 2 of an 80-byte header: header words 16–19 (a vector), then padding for 640 bits."""
        return (words16, _v4([0x80000000, 0, 0, 0]), _v4([0, 0, 0, 0]), _v4([0, 0, 0, 640]))


def _pointer(context, builder, array_type, value, row=None, width: int = 0):
    """The data pointer of a C-contiguous array, or ``&array[row, 0]`` for ``width`` words per row."""
    data = context.make_array(array_type)(context, builder, value).data
    return data if row is None else builder.gep(data, [builder.mul(row, ir.Constant(row.type, width))])


def _contiguous(dtype, *arrays) -> bool:
    return all(isinstance(a, types.Array) and a.dtype == dtype and a.layout == "C" for a in arrays)


def _i32(value: int) -> ir.Constant:
    return ir.Constant(_I32, value)


#: rnds2 steps in one pass of the recursion: block 1 from round 8, block 2, the re-hash.
_BLOCK2_STEP = 28
_REHASH_STEP = _BLOCK2_STEP + 32
PASS_STEPS = _REHASH_STEP + 32

#: Where in its pass each interleaved evaluation is when a loop turn starts. Staggered by 20 steps
#: in pairs, some evaluations run block 2 (no message schedule) while the others schedule their
#: messages in registers, which spreads the ``sha256msg2`` work (one per 2 cycles) over the turn:
#: 10 % faster than all six, or four, in step on the standard AMD EPYC (docs/sha-ni.md §2).
STREAM_OFFSETS = (0, 0, 20, 20, 40, 40)
assert len(STREAM_OFFSETS) == EVALUATE_STREAMS


class _Pass:
    """One evaluation's pass of the DESIGN §4.2 recursion as PASS_STEPS ``rnds2`` steps, emitted one
    step at a time, so that interleaved evaluations can be at different steps of their passes in one
    loop turn: steps 0–27 are block 1 from round 8 (rounds 0–7 are done once per evaluation), 28–59
    block 2 with its W+K words from memory, 60–91 the re-hash. Step 91 ends with the pass key
    stored and the jitter applied to message vectors 2 and 3 for the next pass.

    ``live`` holds the IR values the pass carries from one step to the next, by name: always
    ``changing`` (message vectors 2 and 3 as the jitter left them), and within a block its
    ``state`` (the two-vector SHA-NI state), ``messages`` (the block's four message vectors as the
    schedule stands) and block 2's ``initial`` state (for its feed-forward)."""

    def __init__(self, e, early, early_msgs, wk, wk_at, slots, keys, keys_at) -> None:
        self.e, self.early, self.early_msgs = e, early, early_msgs
        self.wk, self.wk_at, self.slots, self.keys, self.keys_at = wk, wk_at, slots, keys, keys_at
        self.live: dict[str, tuple] = {"changing": tuple(early_msgs[2:])}

    def carried(self) -> list[tuple[str, tuple]]:
        """The live values in a fixed order (what a loop turn that ends mid-pass hands to the next)."""
        return sorted(self.live.items())

    def resume(self, names_and_sizes: list[tuple[str, int]], values: list) -> None:
        """Take up ``carried()``'s values again (loaded at the start of a loop turn)."""
        self.live, at = {}, 0
        for name, size in names_and_sizes:
            self.live[name], at = tuple(values[at : at + size]), at + size

    def step(self, t: int, p) -> None:
        """Emit step ``t`` (0 … PASS_STEPS-1) of pass ``p`` (an i64 value)."""
        e, b, live = self.e, self.e.b, self.live
        if t == 0:
            live["state"], live["messages"] = self.early, (*self.early_msgs[:2], *live["changing"])
        if t < _BLOCK2_STEP or t >= _REHASH_STEP:
            first = t + 4 if t < _BLOCK2_STEP else t - _REHASH_STEP  # block 1 starts at step 4
            states, messages = e.rounds([live["state"]], [live["messages"]], first, first + 1)
            live["state"], live["messages"] = states[0], tuple(messages[0])
        else:
            r = t - _BLOCK2_STEP
            s0, s1 = live["state"]
            wk = e.load(self.wk, e.i64(self.wk_at + 2 * r))  # lanes 0-1: W+K of rounds 2r, 2r+1
            live["state"] = (s0, e.rnds2(s1, s0, wk)) if r % 2 == 0 else (e.rnds2(s0, s1, wk), s1)
        if t == _BLOCK2_STEP - 1:
            live["state"] = live["initial"] = e.feed_forward([live.pop("state")], [e.iv])[0]
            del live["messages"]
        elif t == _REHASH_STEP - 1:
            digest = e.feed_forward([live.pop("state")], [live.pop("initial")])[0]
            live["state"] = e.iv
            live["messages"] = (*e.to_words(digest), _v4([0x80000000, 0, 0, 0]), _v4([0, 0, 0, 256]))
        elif t == PASS_STEPS - 1:
            final = e.feed_forward([live.pop("state")], [e.iv])[0]
            del live["messages"]
            key = b.extract_element(final[0], _i32(3))  # ABEF lane 3: a
            b.store(key, b.gep(self.keys, [b.add(e.i64(self.keys_at), p)]))
            masks = e.mutation(e.jitter(p, key, self.slots))
            live["changing"] = tuple(b.xor(v, m) for v, m in zip(live["changing"], masks, strict=True))


def _flat(stream: _Pass) -> list:
    return [v for _, values in stream.carried() for v in values]


@intrinsic
def _evaluate_streams(typingctx, words, jitter_slots, first, last, golden, keys):
    """The whole DESIGN §4.2 recursion of rows ``first … first+EVALUATE_STREAMS-1`` (each clamped to
    ``last``), interleaved, in registers: ``words`` uint32[N, 20] big-endian header words,
    ``jitter_slots`` uint32[N, 3] (slots 1–3); writes ``golden[row]`` and ``keys[row, 0:3]``. All
    four arrays C-contiguous; no bounds checks (the caller keeps ``last`` < N).

    Per evaluation, before the pass loop: rounds 0–7 of block 1 (they read only words 0–7, which
    no pass changes) and the 64 W+K words of block 2 (words 16–19 and padding: fixed too), kept on
    the stack, so the 22 compressions of block 2 are loads and ``rnds2`` only. Passes change only
    words 9–12 (lanes 1–3 of message vector 2, lane 0 of vector 3). Streams run their passes at the
    offsets of STREAM_OFFSETS: one loop turn is PASS_STEPS steps of each; a stream at offset d runs
    steps 0…d-1 of its first pass before the loop and the same steps of a pass 22 it does not use
    at the end. The 22 keys of a stream go to the stack and its golden and stability keys to the
    arrays after the loop."""
    if not (_contiguous(types.uint32, words, jitter_slots, golden, keys) and first == last == types.int64):
        return None
    sig = types.none(words, jitter_slots, first, last, golden, keys)

    def codegen(context, builder, signature, args):
        e = _Emitter(builder)
        streams = range(EVALUATE_STREAMS)
        words_t, slots_t, _, _, golden_t, keys_t = signature.args
        rows = []
        for k in streams:
            row = builder.add(args[2], e.i64(k))
            rows.append(builder.select(builder.icmp_signed("<", row, args[3]), row, args[3]))
        header = [_pointer(context, builder, words_t, args[0], row, _HEADER_WORDS) for row in rows]
        msgs = [[e.load(h, e.i64(4 * j)) for j in range(4)] for h in header]
        slots = []
        for row in rows:
            at = _pointer(context, builder, slots_t, args[1], row, 3)
            slots.append([builder.load(builder.gep(at, [e.i64(j)])) for j in range(3)])
        # Block 2's W+K, 64 words per stream and 4 of padding (the last two-round load reads them).
        wk = cgutils.alloca_once(builder, _I32, size=EVALUATE_STREAMS * _WK_WORDS)
        for k in streams:
            block2 = e.header_tail(e.load(header[k], e.i64(16)))
            for i, vector in enumerate(e.schedule(block2)):
                e.store(builder.add(vector, e.k[i]), wk, e.i64(_WK_WORDS * k + 4 * i))
            e.store(_v4([0, 0, 0, 0]), wk, e.i64(_WK_WORDS * k + 64))
        found = cgutils.alloca_once(builder, _I32, size=EVALUATE_STREAMS * (PASSES + 1))
        early, early_msgs = e.rounds([e.iv] * EVALUATE_STREAMS, msgs, 0, 4)  # with msg1 of vectors 0, 1
        passes = [
            _Pass(e, early[k], early_msgs[k], wk, _WK_WORDS * k, slots[k], found, (PASSES + 1) * k)
            for k in streams
        ]
        offsets = STREAM_OFFSETS
        for t in range(max(offsets)):
            for k in streams:
                if t < offsets[k]:
                    passes[k].step(t, e.i64(0))
        # What each stream carries from one loop turn to the next (through stack cells, which LLVM
        # turns back into registers).
        layouts = [[(name, len(values)) for name, values in stream.carried()] for stream in passes]
        cells = [[cgutils.alloca_once_value(builder, v) for v in _flat(stream)] for stream in passes]
        with cgutils.for_range(builder, e.i64(PASSES + 1)) as loop:
            for stream, layout, stream_cells in zip(passes, layouts, cells, strict=True):
                stream.resume(layout, [builder.load(c) for c in stream_cells])
            following = builder.add(loop.index, e.i64(1))
            for t in range(PASS_STEPS):
                for k in streams:
                    position = (t + offsets[k]) % PASS_STEPS
                    passes[k].step(position, loop.index if t + offsets[k] < PASS_STEPS else following)
            for stream, layout, stream_cells in zip(passes, layouts, cells, strict=True):
                assert [(name, len(values)) for name, values in stream.carried()] == layout
                for cell, value in zip(stream_cells, _flat(stream), strict=True):
                    builder.store(value, cell)
        golden_data = _pointer(context, builder, golden_t, args[4])
        for k, row in enumerate(rows):
            base = (PASSES + 1) * k
            golden_key = builder.load(builder.gep(found, [e.i64(base + PASSES)]))
            builder.store(golden_key, builder.gep(golden_data, [row]))
            out = _pointer(context, builder, keys_t, args[5], row, PASSES - STABILITY_FIRST)
            for t in range(PASSES - STABILITY_FIRST):
                value = builder.load(builder.gep(found, [e.i64(base + STABILITY_FIRST + t)]))
                builder.store(value, builder.gep(out, [e.i64(t)]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _scan_nonces(typingctx, midstate, tail, nonces, groups, zero_bits, at):
    """Leading zero bits of the mining hash (Bitcoin's double SHA-256, read byte-reversed) of
    ``groups`` × SCAN_STREAMS headers that share bytes 0–75: ``midstate`` uint32[8] is the state
    after bytes 0–63, ``tail`` uint32[3] the big-endian words of bytes 64–75, ``nonces``
    uint32[≥ groups × SCAN_STREAMS] the nonces (their value; bytes 76–79 hold it little-endian).
    Writes ``zero_bits[at + i]`` (uint8, capped at 255) for nonce i. One loop in the IR,
    SCAN_STREAMS nonces interleaved per turn; no bounds checks (the caller sizes the arrays).

    Work no nonce changes is done once per call, before the loop: ``rnds2`` step 0 of block 2
    (rounds 0–1 read only header words 16–17) and the schedule terms of its constant words. The
    re-hash stops after step 30 (rounds 60–61), which already gives digest word 7 (h₆₄ = e₆₀):
    byte-swapped, it holds the hash's top 32 bits, and only when it is zero (one nonce in 2³²) are
    the last two rounds and the other words needed; that rare case takes a branch."""
    if not (
        _contiguous(types.uint32, midstate, tail, nonces)
        and _contiguous(types.uint8, zero_bits)
        and groups == at == types.int64
    ):
        return None
    sig = types.none(midstate, tail, nonces, groups, zero_bits, at)

    def codegen(context, builder, signature, args):
        e = _Emitter(builder)
        streams = range(SCAN_STREAMS)
        mid, tail_p, nonce_p, _, out, _ = (
            _pointer(context, builder, t, a) if isinstance(t, types.Array) else None
            for t, a in zip(signature.args, args, strict=True)
        )
        start = e.to_state(e.load(mid, e.i64(0)), e.load(mid, e.i64(4)))
        fixed = ir.Constant(_V4, ir.Undefined)
        for lane in range(4):
            word = builder.load(builder.gep(tail_p, [e.i64(lane)])) if lane < 3 else _i32(0)
            fixed = builder.insert_element(fixed, word, _i32(lane))
        block2 = e.header_tail(fixed)
        first = (start[0], e.rnds2(start[1], start[0], e.add(fixed, e.k[0])))  # step 0: any nonce
        bswap = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I32, [_I32]), "llvm.bswap.i32"
        )
        ctlz_type = ir.FunctionType(_I32, [_I32, ir.IntType(1)])
        ctlz = cgutils.get_or_insert_function(builder.module, ctlz_type, "llvm.ctlz.i32")

        def leading_zeros(word):
            return builder.call(ctlz, [builder.call(bswap, [word]), ir.Constant(ir.IntType(1), 0)])

        with cgutils.for_range(builder, args[3]) as loop:
            base = builder.mul(loop.index, e.i64(SCAN_STREAMS))
            messages = []
            for k in streams:
                nonce = builder.load(builder.gep(nonce_p, [builder.add(base, e.i64(k))]))
                word = builder.call(bswap, [nonce])  # bytes 76–79 as a big-endian message word
                messages.append((builder.insert_element(fixed, word, _i32(3)), *block2[1:]))
            states = e.rounds([first] * SCAN_STREAMS, messages, 1, 32)[0]
            states = e.feed_forward(states, [start] * SCAN_STREAMS)
            padding = (_v4([0x80000000, 0, 0, 0]), _v4([0, 0, 0, 256]))
            rehash = [(*e.to_words(state), *padding) for state in states]
            pairs, schedules = e.rounds([e.iv] * SCAN_STREAMS, rehash, 0, 31)
            h7 = _v4([design.SHA256_IV[7]] * 4)
            top = [builder.extract_element(e.add(pair[1], h7), _i32(0)) for pair in pairs]  # F + h
            where = [builder.gep(out, [builder.add(args[5], builder.add(base, e.i64(k)))]) for k in streams]
            rare = ir.Constant(ir.IntType(1), 0)
            for k in streams:
                builder.store(builder.trunc(leading_zeros(top[k]), ir.IntType(8)), where[k])
                rare = builder.or_(rare, builder.icmp_unsigned("==", top[k], _i32(0)))
            with builder.if_then(rare, likely=False):
                done = e.feed_forward(e.rounds(pairs, schedules, 31, 32)[0], [e.iv] * SCAN_STREAMS)
                for k in streams:
                    words = [
                        builder.extract_element(v, _i32(i)) for v in e.to_words(done[k]) for i in range(4)
                    ]
                    bits, all_zero = _i32(0), ir.Constant(ir.IntType(1), 1)
                    for word in reversed(words):
                        z = leading_zeros(word)
                        bits = builder.add(bits, builder.select(all_zero, z, _i32(0)))
                        all_zero = builder.and_(all_zero, builder.icmp_unsigned("==", z, _i32(32)))
                    capped = builder.select(builder.icmp_unsigned(">", bits, _i32(255)), _i32(255), bits)
                    builder.store(builder.trunc(capped, ir.IntType(8)), where[k])
        return context.get_dummy_value()

    return sig, codegen


def _evaluate_groups_py(words, jitter_slots, golden, keys):  # pragma: no cover - compiled
    """``words`` uint32[N, 20] big-endian header words, ``jitter_slots`` uint32[N, 3] (slots 1–3).
    Writes ``golden[N]`` and ``keys[N, 3]``. Evaluations run EVALUATE_STREAMS at a time, interleaved; the
    last group repeats row N-1 to fill its streams (same result written twice). Nothing is
    allocated per group: the intrinsic reads and writes the arrays in place."""
    n = words.shape[0]
    for group in prange((n + EVALUATE_STREAMS - 1) // EVALUATE_STREAMS):
        _evaluate_streams(words, jitter_slots, group * EVALUATE_STREAMS, n - 1, golden, keys)


def _scan_windows_py(midstate, tail, starts, window_size, skip, count, zero_bits):  # pragma: no cover
    """The SHA-NI twin of ``cpu_simd._scan_windows_blocks_py`` (same arguments; ``zero_bits``
    uint8[≥ count rounded up to SCAN_STREAMS]): leading zero bits of the mining hash per position.
    Work items of SCAN_GROUPS_PER_ITEM groups list their nonces first (walking the windows, no
    division per nonce), then hash them in one intrinsic call."""
    per_item = SCAN_GROUPS_PER_ITEM * SCAN_STREAMS
    for item in prange((count + per_item - 1) // per_item):
        first = item * per_item
        n = min(count - first, per_item)
        groups = (n + SCAN_STREAMS - 1) // SCAN_STREAMS
        nonces = np.empty(groups * SCAN_STREAMS, dtype=np.uint32)
        position = skip + first
        window = position // window_size
        offset = position - window * window_size
        for j in range(n):
            nonces[j] = (starts[window] + offset) & 0xFFFFFFFF
            offset += 1
            if offset == window_size:
                window += 1
                offset = 0
        for j in range(n, groups * SCAN_STREAMS):
            nonces[j] = nonces[n - 1]  # fills the last group; its extra results land in the padding
        _scan_nonces(midstate, tail, nonces, groups, zero_bits, first)


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
        from .cpu_words import serial_call

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
    serial: bool,
) -> np.ndarray:
    """The SHA-NI twin of ``cpu_simd.scan_windows`` (same arguments, same uint8[count] result).
    Call only when ``sha_ni_usable()``."""
    zero_bits = np.empty(-(-count // SCAN_STREAMS) * SCAN_STREAMS, dtype=np.uint8)
    args = (midstate, tail, starts, window_size, skip, count, zero_bits)
    if serial:
        _scan_windows_serial(*args)
    elif count:
        with numba.parallel_chunksize(1):  # one work item at a time: a worker that loses its core
            _scan_windows(*args)  # leaves the rest to the others
    return zero_bits[:count]
