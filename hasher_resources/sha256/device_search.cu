// The device-resident seed search (DESIGN §4.4): generations run on the GPU, only finished frames
// come back. Compiled after recursion.cu (its device functions evaluate a candidate) with generated
// #defines for the memory layout (hasher_core/search/device_layout.py) and the search's constants.
//
// Persistent blocks, one frame per block at a time. Block b owns slot b: the frame's state and its
// population (structure of arrays in global memory, so any population size fits). A launch gives
// every block a budget of generations; a block whose frame finishes writes one record and claims
// the next frame from the queue, and at the end of its budget saves its frame's state for the next
// launch. Each generation: evaluate the members not yet evaluated, score all, keep the best, then
// build the next population (GRPO: advantages, stable elite order, mutants, fresh seeds; scan: the
// next block of nonces). Randomness is the CPU search's counter-based streams, keyed by the frame,
// so the block a frame lands on, the launch it runs in and the order frames finish change nothing.
//
// Bit equality with the Numba search (hasher_core/search/fused.py): integer work is exact; the float32
// reward and advantage use __fadd_rn/__fmul_rn/__fdiv_rn/__fsqrt_rn, which the compiler never
// contracts into FMA, in the operation order of fused.py (and the module is compiled with
// --fmad=false besides); means and the standard deviation add in numpy's pairwise order, from a
// plan the host computes (device_layout.pairwise_plan).
//
// The same block code compiles as host C++: there a block is a loop over its threads per phase
// (HASHER_PHASE), blocks run one after another, and atomics are plain adds. That is how the test
// suite runs this search on machines without a GPU. The rules that make the two agree: threads of
// one phase never read what another thread writes in the same phase (except atomics whose result
// does not depend on order), per-thread variables do not outlive their phase, and every value that
// steers the block's control flow is read from shared memory after a barrier.

#ifndef HASHER_CFG_POPULATION
#error "compile through hasher_resources.sha256.device_search.search_source(): the layout is generated"
#endif

typedef unsigned long long hasher_u64;

#ifdef __CUDACC__
#define HASHER_SEARCH_FN __device__ __forceinline__
#define HASHER_CONSTANT __constant__
#define HASHER_BARRIER() __syncthreads()
// The thread's index, read afresh in every phase (a volatile read the compiler cannot merge), so no
// register holds it across the recursion.
HASHER_SEARCH_FN int hasher_thread_index() {
  int t;
  asm volatile("mov.u32 %0, %%tid.x;" : "=r"(t));
  return t;
}
#define HASHER_EACH_THREAD(t) for (int t = hasher_thread_index(), t##_pass = 0; t##_pass == 0; t##_pass = 1)
// Within a phase, after a long computation: the thread index read again rather than kept.
#define HASHER_EACH_THREAD_AGAIN(t) t = hasher_thread_index()
// The block's thread count where a phase strides: read from blockDim (a constant-bank operand), not
// kept in a register across the recursion.
#define HASHER_THREADS ((int)blockDim.x)
HASHER_SEARCH_FN float hasher_fadd(float a, float b) { return __fadd_rn(a, b); }
HASHER_SEARCH_FN float hasher_fsub(float a, float b) { return __fsub_rn(a, b); }
HASHER_SEARCH_FN float hasher_fmul(float a, float b) { return __fmul_rn(a, b); }
HASHER_SEARCH_FN float hasher_fdiv(float a, float b) { return __fdiv_rn(a, b); }
HASHER_SEARCH_FN float hasher_fsqrt(float a) { return __fsqrt_rn(a); }
HASHER_SEARCH_FN float hasher_frint(float a) { return rintf(a); }
HASHER_SEARCH_FN float hasher_bits_float(hasher_u32 x) { return __uint_as_float(x); }
HASHER_SEARCH_FN hasher_u32 hasher_float_bits(float x) { return __float_as_uint(x); }
HASHER_SEARCH_FN int hasher_popc(hasher_u32 x) { return __popc(x); }
HASHER_SEARCH_FN hasher_u32 hasher_atomic_add(hasher_u32* p, hasher_u32 v) { return atomicAdd(p, v); }
HASHER_SEARCH_FN int hasher_atomic_add(int* p, int v) { return atomicAdd(p, v); }
HASHER_SEARCH_FN hasher_u64 hasher_atomic_add(hasher_u64* p, hasher_u64 v) { return atomicAdd(p, v); }
HASHER_SEARCH_FN void hasher_atomic_add(double* p, double v) { atomicAdd(p, v); }
HASHER_SEARCH_FN void hasher_atomic_max(hasher_u64* p, hasher_u64 v) { atomicMax(p, v); }
#else
#include <cstring>
#define HASHER_SEARCH_FN static inline
#define HASHER_CONSTANT static const
#define HASHER_BARRIER()
// A phase's threads, one after another (in reverse when the tests ask: no phase may depend on order).
static int hasher_host_reverse_threads = 0;
#define HASHER_EACH_THREAD(t)                                                                   \
  for (int t##_i = 0, t = 0;                                                                    \
       t##_i < threads && ((t = hasher_host_reverse_threads ? threads - 1 - t##_i : t##_i), 1); \
       ++t##_i)
#define HASHER_THREADS threads
#define HASHER_EACH_THREAD_AGAIN(t)
HASHER_SEARCH_FN float hasher_fadd(float a, float b) { return a + b; }
HASHER_SEARCH_FN float hasher_fsub(float a, float b) { return a - b; }
HASHER_SEARCH_FN float hasher_fmul(float a, float b) { return a * b; }
HASHER_SEARCH_FN float hasher_fdiv(float a, float b) { return a / b; }
HASHER_SEARCH_FN float hasher_fsqrt(float a) { return __builtin_sqrtf(a); }
HASHER_SEARCH_FN float hasher_frint(float a) { return __builtin_rintf(a); }
HASHER_SEARCH_FN float hasher_bits_float(hasher_u32 x) { float f; std::memcpy(&f, &x, 4); return f; }
HASHER_SEARCH_FN hasher_u32 hasher_float_bits(float x) { hasher_u32 u; std::memcpy(&u, &x, 4); return u; }
HASHER_SEARCH_FN int hasher_popc(hasher_u32 x) { return __builtin_popcount(x); }
HASHER_SEARCH_FN hasher_u32 hasher_atomic_add(hasher_u32* p, hasher_u32 v) { const hasher_u32 o = *p; *p = o + v; return o; }
HASHER_SEARCH_FN int hasher_atomic_add(int* p, int v) { const int o = *p; *p = o + v; return o; }
HASHER_SEARCH_FN hasher_u64 hasher_atomic_add(hasher_u64* p, hasher_u64 v) { const hasher_u64 o = *p; *p = o + v; return o; }
HASHER_SEARCH_FN void hasher_atomic_add(double* p, double v) { *p += v; }
HASHER_SEARCH_FN void hasher_atomic_max(hasher_u64* p, hasher_u64 v) { *p = *p > v ? *p : v; }
#endif

// A barrier, then the phase's body once per thread (t: the thread's index in the block).
#define HASHER_PHASE(t) \
  HASHER_BARRIER();     \
  HASHER_EACH_THREAD(t)

HASHER_CONSTANT int hasher_nonce_flips[HASHER_MAX_FLIPS + 1] = {HASHER_NONCE_FLIPS};
static_assert(HASHER_POP_KEYS == HASHER_POP_GOLDEN + 1, "the evaluation writes golden and keys as one field run");

// --- counter-based streams (hasher_core/search/fused_math.py) ---------------------------------------

HASHER_SEARCH_FN hasher_u64 hasher_mix64(hasher_u64 z) {
  z = (z ^ (z >> 30)) * HASHER_SPLITMIX_MUL1;
  z = (z ^ (z >> 27)) * HASHER_SPLITMIX_MUL2;
  return z ^ (z >> 31);
}

HASHER_SEARCH_FN hasher_u64 hasher_stream_base(hasher_u64 key, hasher_u64 generation, hasher_u32 stream) {
  return hasher_mix64(key ^ hasher_mix64((generation << 8) | stream));
}

HASHER_SEARCH_FN hasher_u64 hasher_stream_word(hasher_u64 base, hasher_u64 j) {
  return hasher_mix64(base + (j + 1) * HASHER_SPLITMIX_GAMMA);
}

HASHER_SEARCH_FN hasher_u32 hasher_lo(hasher_u64 w) { return (hasher_u32)w; }
HASHER_SEARCH_FN hasher_u32 hasher_hi(hasher_u64 w) { return (hasher_u32)(w >> 32); }

// --- populations: seeds as 5 words (extranonce little-endian words 0-3, seed bytes 28-31) ----------

// Fresh seed k of a generation's fresh run (fused.write_fresh): the stream's bytes, 20 per seed.
HASHER_SEARCH_FN void hasher_fresh_seed(hasher_u64 base, hasher_u32 k, hasher_u32 seed[HASHER_SEED_WORDS]) {
  const hasher_u64 first = 5ull * (k >> 1);
  if ((k & 1u) == 0) {
    const hasher_u64 w0 = hasher_stream_word(base, first), w1 = hasher_stream_word(base, first + 1),
                     w2 = hasher_stream_word(base, first + 2);
    seed[0] = hasher_lo(w0); seed[1] = hasher_hi(w0); seed[2] = hasher_lo(w1); seed[3] = hasher_hi(w1);
    seed[4] = hasher_lo(w2);
  } else {
    const hasher_u64 w2 = hasher_stream_word(base, first + 2), w3 = hasher_stream_word(base, first + 3),
                     w4 = hasher_stream_word(base, first + 4);
    seed[0] = hasher_hi(w2); seed[1] = hasher_lo(w3); seed[2] = hasher_hi(w3); seed[3] = hasher_lo(w4);
    seed[4] = hasher_hi(w4);
  }
}

// Member i of a scan generation (fused.write_scan): nonce generation·P + i under the extranonce of its
// 2^32 rollover; the nonce is big-endian in the seed, so its little-endian word is byte-swapped.
HASHER_SEARCH_FN void hasher_scan_seed(hasher_u64 key, hasher_u64 generation, hasher_u32 population, hasher_u32 i,
                                       hasher_u32 seed[HASHER_SEED_WORDS]) {
  const hasher_u64 offset = generation * population + i;
  const hasher_u64 base = hasher_stream_base(key, offset >> 32, HASHER_STREAM_SCAN_EXTRANONCE);
  const hasher_u64 w0 = hasher_stream_word(base, 0), w1 = hasher_stream_word(base, 1);
  seed[0] = hasher_lo(w0); seed[1] = hasher_hi(w0); seed[2] = hasher_lo(w1); seed[3] = hasher_hi(w1);
  seed[4] = hasher_bswap((hasher_u32)offset);
}

// The Bitcoin-aware mutant of parent (fused.write_mutant): fewer flips for a higher |advantage|,
// about 70 % of them in the nonce.
HASHER_SEARCH_FN void hasher_mutant(const hasher_u32 parent[HASHER_SEED_WORDS], float advantage, hasher_u64 w_nonce,
                                    hasher_u64 w_extranonce, hasher_u32 child[HASHER_SEED_WORDS]) {
  const float magnitude = advantage < 0.0f ? -advantage : advantage;
  float x = hasher_frint(hasher_fdiv((float)HASHER_MAX_FLIPS, hasher_fadd(magnitude, 1.0f)));
  x = x < 1.0f ? 1.0f : x;
  x = x > (float)HASHER_MAX_FLIPS ? (float)HASHER_MAX_FLIPS : x;
  const int total = (int)x;
  const int in_nonce = hasher_nonce_flips[total];
  hasher_u32 nonce_mask = 0;
  HASHER_UNROLL
  for (int k = 0; k < HASHER_MAX_NONCE_FLIPS; ++k) {
    const hasher_u32 pos = (hasher_u32)(w_nonce >> (5 * k)) & 31u;
    if (k < in_nonce) nonce_mask ^= 1u << pos;
  }
  hasher_u64 low = 0, high = 0;  // the 128 extranonce bits as two little-endian words
  HASHER_UNROLL
  for (int k = 0; k < HASHER_MAX_EXTRANONCE_FLIPS; ++k) {
    const hasher_u32 pos = (hasher_u32)(w_extranonce >> (7 * k)) & 127u;
    const hasher_u64 bit = (k < total - in_nonce) ? 1ull << (pos & 63u) : 0ull;
    if (pos >= 64) high ^= bit; else low ^= bit;
  }
  child[0] = parent[0] ^ hasher_lo(low);
  child[1] = parent[1] ^ hasher_hi(low);
  child[2] = parent[2] ^ hasher_lo(high);
  child[3] = parent[3] ^ hasher_hi(high);
  child[4] = parent[4] ^ hasher_bswap(nonce_mask);
}

// --- scoring (DESIGN §4.3, fused._score_frame) ----------------------------------------------------

HASHER_SEARCH_FN float hasher_reward(hasher_u32 golden, hasher_u32 k0, hasher_u32 k1, hasher_u32 k2, hasher_u32 target,
                                     int matched, int difficulty, float w_alignment, float w_stability,
                                     float w_format) {
  const float inv32 = 0.03125f;  // x / 32 == x * (1/32) exactly
  const float bonus = hasher_fmul(hasher_bits_float(HASHER_PREFIX_REWARD_BONUS_BITS), matched >= difficulty ? 1.0f : 0.0f);
  const float alignment = hasher_fadd(hasher_fmul((float)(32 - hasher_popc(golden ^ target)), inv32), bonus);
  float stability = -0.0f;
  stability = hasher_fadd(stability, hasher_fmul((float)(32 - hasher_popc(k0 ^ golden)), inv32));
  stability = hasher_fadd(stability, hasher_fmul((float)(32 - hasher_popc(k1 ^ golden)), inv32));
  stability = hasher_fadd(stability, hasher_fmul((float)(32 - hasher_popc(k2 ^ golden)), inv32));
  stability = hasher_fdiv(stability, 3.0f);
  const float valid = (golden >> HASHER_SEARCH_TOKEN_SHIFT) < (hasher_u32)HASHER_VOCABULARY_SIZE ? 1.0f : 0.0f;
  return hasher_fadd(hasher_fadd(hasher_fmul(w_alignment, alignment), hasher_fmul(w_stability, stability)),
                     hasher_fmul(w_format, valid));
}

// One leaf of numpy's pairwise float32 sum (fused_math._block_sum) over bits[lo, lo + n).
HASHER_SEARCH_FN float hasher_leaf_sum(const hasher_u32* bits, hasher_u32 lo, hasher_u32 n) {
  if (n < 8) {
    float res = -0.0f;
    for (hasher_u32 i = 0; i < n; ++i) res = hasher_fadd(res, hasher_bits_float(bits[lo + i]));
    return res;
  }
  float r0 = hasher_bits_float(bits[lo]), r1 = hasher_bits_float(bits[lo + 1]), r2 = hasher_bits_float(bits[lo + 2]),
        r3 = hasher_bits_float(bits[lo + 3]), r4 = hasher_bits_float(bits[lo + 4]),
        r5 = hasher_bits_float(bits[lo + 5]), r6 = hasher_bits_float(bits[lo + 6]),
        r7 = hasher_bits_float(bits[lo + 7]);
  hasher_u32 i = 8;
  for (; i < n - n % 8; i += 8) {
    r0 = hasher_fadd(r0, hasher_bits_float(bits[lo + i]));
    r1 = hasher_fadd(r1, hasher_bits_float(bits[lo + i + 1]));
    r2 = hasher_fadd(r2, hasher_bits_float(bits[lo + i + 2]));
    r3 = hasher_fadd(r3, hasher_bits_float(bits[lo + i + 3]));
    r4 = hasher_fadd(r4, hasher_bits_float(bits[lo + i + 4]));
    r5 = hasher_fadd(r5, hasher_bits_float(bits[lo + i + 5]));
    r6 = hasher_fadd(r6, hasher_bits_float(bits[lo + i + 6]));
    r7 = hasher_fadd(r7, hasher_bits_float(bits[lo + i + 7]));
  }
  float res = hasher_fadd(hasher_fadd(hasher_fadd(r0, r1), hasher_fadd(r2, r3)),
                          hasher_fadd(hasher_fadd(r4, r5), hasher_fadd(r6, r7)));
  for (; i < n; ++i) res = hasher_fadd(res, hasher_bits_float(bits[lo + i]));
  return res;
}

// The plan's postfix program over the leaf sums: i >= 0 pushes leaf i, -1 adds the top two.
HASHER_SEARCH_FN float hasher_run_plan(const hasher_u32* program, hasher_u32 length, const hasher_u32* leaf_sums,
                                       float* stack) {
  int top = 0;
  for (hasher_u32 i = 0; i < length; ++i) {
    const int op = (int)program[i];
    if (op >= 0) {
      stack[top++] = hasher_bits_float(leaf_sums[op]);
    } else {
      --top;
      stack[top - 1] = hasher_fadd(stack[top - 1], stack[top]);
    }
  }
  return stack[0];
}

// A stand-in for the recursion that costs almost nothing (tests and the driver benchmark): the same
// function as hasher_resources.sha256.device_search_host.standin_evaluate.
HASHER_SEARCH_FN void hasher_standin_evaluate(const hasher_u32* slots, const hasher_u32 seed_le[8],
                                              hasher_u32 header_time, hasher_u32* golden, hasher_u32 keys[3]) {
  hasher_u64 z = hasher_mix64((hasher_u64)header_time + 1);
  for (int i = 0; i < 12; ++i) z = hasher_mix64(z ^ slots[i]);
  for (int i = 0; i < 8; i += 2) z = hasher_mix64(z ^ (seed_le[i] | ((hasher_u64)seed_le[i + 1] << 32)));
  *golden = hasher_hi(hasher_mix64(z));
  keys[0] = hasher_hi(hasher_mix64(z + 1));
  keys[1] = hasher_hi(hasher_mix64(z + 2));
  keys[2] = hasher_hi(hasher_mix64(z + 3));
}

// --- the block ------------------------------------------------------------------------------------

struct hasher_search_memory {
  const hasher_u32* config;     // device_layout.config_words
  hasher_u32* state;            // [slots][STATE_WORDS]
  hasher_u32* population;       // [slots][POP_FIELDS][population]
  hasher_u32* scratch;          // [slots][ELITE_FIELDS * elites + leaves]
  const hasher_u32* queue;      // [ring][QUEUE_WORDS]
  hasher_u64* counters;         // [COUNTERS]: head, end, records, evaluations, history reached, longest
  hasher_u32* records;          // [capacity][RECORD_WORDS]
  hasher_u32* history_frames;   // [history_capacity]: frames scored at each generation index
  double* history_mean;         // [history_capacity]: sums of their mean rewards
  double* history_best;         // [history_capacity]: sums of their best rewards
  hasher_u32 ring_mask;
  hasher_u32 history_capacity;
  hasher_u32 generations;       // each block's budget in this launch
};

struct hasher_search_shared {
  // the knobs (hasher_load_knobs)
  hasher_u32 slot, population, elites, mutants, max_generations, header_time, n_epochs, n_leaves, n_program;
  int difficulty, grpo;
  float w_alignment, w_stability, w_format;
  // the frame in this block's slot
  hasher_u32 frame;  // the slot's frame (its queue index), HASHER_NO_FRAME when none
  hasher_u64 key;
  hasher_u32 slots[12];
  hasher_u32 target;
  hasher_u32 generation, epoch, first;
  int best_matched;
  float best_reward;
  hasher_u32 best_seed[HASHER_SEED_WORDS];
  hasher_u32 best_golden;
  hasher_u64 evaluations;
  hasher_u32 left;        // generations left in this launch
  hasher_u32 round;       // the first row of the evaluation round in progress
  hasher_u64 evaluated;   // evaluations by this block in this launch
  int done;
  float mean, std;
  int bucket[HASHER_MAX_SCORE + 1];
  int part_index[HASHER_SEARCH_BLOCK];
  int part_matched[HASHER_SEARCH_BLOCK];
  float part_reward[HASHER_SEARCH_BLOCK];
  float part_max[HASHER_SEARCH_BLOCK];
  int part_total[HASHER_SEARCH_BLOCK];
  float stack[64];
};

HASHER_SEARCH_FN void hasher_load_slot(const hasher_u32* st, hasher_search_shared* sh) {
  sh->frame = st[HASHER_STATE_FRAME];
  sh->key = st[HASHER_STATE_KEY_LO] | ((hasher_u64)st[HASHER_STATE_KEY_HI] << 32);
  for (int i = 0; i < 12; ++i) sh->slots[i] = st[HASHER_STATE_SLOTS + i];
  sh->target = st[HASHER_STATE_TARGET];
  sh->generation = st[HASHER_STATE_GENERATION];
  sh->epoch = st[HASHER_STATE_EPOCH];
  sh->first = st[HASHER_STATE_FIRST];
  sh->best_matched = (int)st[HASHER_STATE_BEST_MATCHED];
  sh->best_reward = hasher_bits_float(st[HASHER_STATE_BEST_REWARD]);
  for (int i = 0; i < HASHER_SEED_WORDS; ++i) sh->best_seed[i] = st[HASHER_STATE_BEST_SEED + i];
  sh->best_golden = st[HASHER_STATE_BEST_GOLDEN];
  sh->evaluations = st[HASHER_STATE_EVALUATIONS_LO] | ((hasher_u64)st[HASHER_STATE_EVALUATIONS_HI] << 32);
}

HASHER_SEARCH_FN void hasher_save_slot(const hasher_search_shared* sh, hasher_u32* st) {
  st[HASHER_STATE_FRAME] = sh->frame;
  st[HASHER_STATE_KEY_LO] = hasher_lo(sh->key);
  st[HASHER_STATE_KEY_HI] = hasher_hi(sh->key);
  for (int i = 0; i < 12; ++i) st[HASHER_STATE_SLOTS + i] = sh->slots[i];
  st[HASHER_STATE_TARGET] = sh->target;
  st[HASHER_STATE_GENERATION] = sh->generation;
  st[HASHER_STATE_EPOCH] = sh->epoch;
  st[HASHER_STATE_FIRST] = sh->first;
  st[HASHER_STATE_BEST_MATCHED] = (hasher_u32)sh->best_matched;
  st[HASHER_STATE_BEST_REWARD] = hasher_float_bits(sh->best_reward);
  for (int i = 0; i < HASHER_SEED_WORDS; ++i) st[HASHER_STATE_BEST_SEED + i] = sh->best_seed[i];
  st[HASHER_STATE_BEST_GOLDEN] = sh->best_golden;
  st[HASHER_STATE_EVALUATIONS_LO] = hasher_lo(sh->evaluations);
  st[HASHER_STATE_EVALUATIONS_HI] = hasher_hi(sh->evaluations);
}

// Take the next frame of the queue into sh (sh->frame stays HASHER_NO_FRAME when the queue is empty).
HASHER_SEARCH_FN void hasher_claim(const hasher_search_memory& mem, hasher_search_shared* sh) {
  sh->frame = HASHER_NO_FRAME;
  const hasher_u64 claim = hasher_atomic_add(mem.counters + HASHER_COUNTER_HEAD, (hasher_u64)1);
  if (claim >= mem.counters[HASHER_COUNTER_END]) return;
  const hasher_u32* q = mem.queue + (hasher_u64)(claim & mem.ring_mask) * HASHER_QUEUE_WORDS;
  sh->frame = q[HASHER_QUEUE_FRAME];
  sh->key = q[HASHER_QUEUE_KEY_LO] | ((hasher_u64)q[HASHER_QUEUE_KEY_HI] << 32);
  for (int i = 0; i < 12; ++i) sh->slots[i] = q[HASHER_QUEUE_SLOTS + i];
  sh->target = q[HASHER_QUEUE_TARGET];
  sh->generation = 0;
  sh->epoch = 0;
  sh->first = 0;
  sh->best_matched = -1;
  sh->best_reward = hasher_bits_float(0xff800000u);  // -inf: any reward beats it
  for (int i = 0; i < HASHER_SEED_WORDS; ++i) sh->best_seed[i] = 0;
  sh->best_golden = 0;
  sh->evaluations = 0;
}

HASHER_SEARCH_FN void hasher_write_record(const hasher_search_memory& mem, const hasher_search_shared* sh) {
  const hasher_u64 at = hasher_atomic_add(mem.counters + HASHER_COUNTER_FINISHED, (hasher_u64)1);
  hasher_u32* r = mem.records + (hasher_u64)at * HASHER_RECORD_WORDS;
  r[HASHER_RECORD_FRAME] = sh->frame;
  for (int i = 0; i < HASHER_SEED_WORDS; ++i) r[HASHER_RECORD_SEED + i] = sh->best_seed[i];
  r[HASHER_RECORD_GOLDEN] = sh->best_golden;
  r[HASHER_RECORD_MATCHED] = (hasher_u32)sh->best_matched;
  r[HASHER_RECORD_REWARD] = hasher_float_bits(sh->best_reward);
  r[HASHER_RECORD_GENERATIONS] = sh->generation + 1;
  r[HASHER_RECORD_EVALUATIONS_LO] = hasher_lo(sh->evaluations);
  r[HASHER_RECORD_EVALUATIONS_HI] = hasher_hi(sh->evaluations);
}

// The block's knobs, read from the config block once per launch into shared memory: phases re-read
// them there instead of keeping them in registers across the recursion (which needs 80).
HASHER_SEARCH_FN void hasher_load_knobs(const hasher_u32* cfg, hasher_u32 slot, hasher_search_shared* sh) {
  sh->slot = slot;
  sh->population = cfg[HASHER_CFG_POPULATION];
  sh->elites = cfg[HASHER_CFG_ELITES];
  sh->mutants = cfg[HASHER_CFG_MUTANTS];
  sh->difficulty = (int)cfg[HASHER_CFG_DIFFICULTY];
  sh->max_generations = cfg[HASHER_CFG_MAX_GENERATIONS];
  sh->grpo = cfg[HASHER_CFG_GRPO] != 0;
  sh->header_time = cfg[HASHER_CFG_HEADER_TIME];
  sh->w_alignment = hasher_bits_float(cfg[HASHER_CFG_WEIGHT_ALIGNMENT]);
  sh->w_stability = hasher_bits_float(cfg[HASHER_CFG_WEIGHT_STABILITY]);
  sh->w_format = hasher_bits_float(cfg[HASHER_CFG_WEIGHT_FORMAT]);
  sh->n_epochs = cfg[HASHER_CFG_EPOCHS];
  sh->n_leaves = cfg[HASHER_CFG_LEAVES];
  sh->n_program = cfg[HASHER_CFG_PROGRAM];
}

// Field `field` of this block's population (population words each; structure of arrays).
HASHER_SEARCH_FN hasher_u32* hasher_pop(const hasher_search_memory& mem, const hasher_search_shared* sh, int field) {
  return mem.population + ((hasher_u64)sh->slot * HASHER_POP_FIELDS + field) * sh->population;
}

// This block's scratch: elite field `field` (elites words each), or the leaf sums after them.
HASHER_SEARCH_FN hasher_u32* hasher_scratch(const hasher_search_memory& mem, const hasher_search_shared* sh, int field) {
  return mem.scratch + (hasher_u64)sh->slot * (HASHER_ELITE_FIELDS * sh->elites + sh->n_leaves) + field * sh->elites;
}

HASHER_SEARCH_FN const hasher_u32* hasher_epochs(const hasher_search_memory& mem) {
  return mem.config + HASHER_CFG_HEADER_WORDS;
}
HASHER_SEARCH_FN const hasher_u32* hasher_leaves(const hasher_search_memory& mem, const hasher_search_shared* sh) {
  return hasher_epochs(mem) + sh->n_epochs;
}
HASHER_SEARCH_FN const hasher_u32* hasher_program(const hasher_search_memory& mem, const hasher_search_shared* sh) {
  return hasher_leaves(mem, sh) + 2 * sh->n_leaves;
}

// Block `slot`'s share of one launch: up to mem.generations generations, across as many frames as
// finish. threads: the block's thread count (blockDim.x on the device).
HASHER_SEARCH_FN void hasher_search_block(const hasher_search_memory& mem, hasher_u32 slot, int threads,
                                          hasher_search_shared* sh) {
  const float inv32 = 0.03125f;  // x / 32 == x * (1/32) exactly
  HASHER_PHASE(t) {
    if (t == 0) {
      hasher_load_knobs(mem.config, slot, sh);
      hasher_load_slot(mem.state + (hasher_u64)slot * HASHER_STATE_WORDS, sh);
      sh->left = mem.generations;
      sh->evaluated = 0;
    }
  }
  for (;;) {
    HASHER_BARRIER();
    if (sh->left == 0) break;
    if (sh->frame == HASHER_NO_FRAME) {
      HASHER_PHASE(t) {
        if (t == 0) hasher_claim(mem, sh);
      }
      HASHER_BARRIER();
      if (sh->frame == HASHER_NO_FRAME) break;
      HASHER_PHASE(t) {  // generation 0 (fused.start_populations)
        const hasher_u32 population = sh->population;
        hasher_u32* seeds = hasher_pop(mem, sh, HASHER_POP_SEED);  // seeds[w * population + p]
        const hasher_u64 base = hasher_stream_base(sh->key, 0, HASHER_STREAM_FRESH);
        for (hasher_u32 p = t; p < population; p += HASHER_THREADS) {
          hasher_u32 seed[HASHER_SEED_WORDS];
          if (sh->grpo) hasher_fresh_seed(base, p, seed);
          else hasher_scan_seed(sh->key, 0, population, p, seed);
          for (int w = 0; w < HASHER_SEED_WORDS; ++w) seeds[w * population + p] = seed[w];
        }
      }
    }

    // Evaluate the members without a golden (GRPO elites keep theirs), one row per thread per round.
    // Nothing but the recursion's own state is live across it: the round lives in shared memory and
    // the thread index and knobs are re-read afterwards, so the recursion keeps its 80 registers.
    HASHER_PHASE(t) {
      if (t == 0) sh->round = sh->first;
    }
    for (;;) {
      HASHER_BARRIER();
      if (sh->round >= sh->population) break;
      HASHER_PHASE(t) {
        const volatile hasher_search_shared* knobs = sh;
        if (knobs->round + t < knobs->population) {
          hasher_u32 seed_le[8];
          {
            const hasher_u32 population = knobs->population, p = knobs->round + t;
            const hasher_u32* seeds =
                mem.population + ((hasher_u64)knobs->slot * HASHER_POP_FIELDS + HASHER_POP_SEED) * population + p;
            seed_le[0] = seeds[0];
            seed_le[1] = seeds[population];
            seed_le[2] = seeds[2 * population];
            seed_le[3] = seeds[3 * population];
            seed_le[4] = seed_le[5] = seed_le[6] = 0;
            seed_le[7] = seeds[4 * population];
          }
          hasher_u32 g, k[3];
#ifdef HASHER_SEARCH_STANDIN
          hasher_standin_evaluate(sh->slots, seed_le, sh->header_time, &g, k);
#else
          hasher_evaluate_one(sh->slots, seed_le, sh->header_time, &g, k);
#endif
          HASHER_EACH_THREAD_AGAIN(t);
          const hasher_u32 population = knobs->population, p = knobs->round + t;
          hasher_u32* out =
              mem.population + ((hasher_u64)knobs->slot * HASHER_POP_FIELDS + HASHER_POP_GOLDEN) * population + p;
          out[0] = g;  // golden, then the keys (POP_KEYS follows POP_GOLDEN)
          out[population] = k[0];
          out[2 * population] = k[1];
          out[3 * population] = k[2];
        }
      }
      HASHER_PHASE(t) {
        if (t == 0) sh->round += HASHER_THREADS;
      }
    }

    HASHER_PHASE(t) {  // score every member; each thread's first best, max and score total
      const hasher_u32 population = sh->population, target = sh->target;
      const hasher_u32* golden = hasher_pop(mem, sh, HASHER_POP_GOLDEN);
      const hasher_u32* keys = hasher_pop(mem, sh, HASHER_POP_KEYS);
      hasher_u32* rewards = hasher_pop(mem, sh, HASHER_POP_REWARD);
      hasher_u32* scores = hasher_pop(mem, sh, HASHER_POP_SCORE);
      const int epoch_bits = (int)hasher_epochs(mem)[sh->epoch];
      int best_index = -1, best_matched = -1, total = 0;
      float best_reward = 0.0f, max_reward = hasher_bits_float(0xff800000u);
      for (hasher_u32 p = t; p < population; p += HASHER_THREADS) {
        const hasher_u32 g = golden[p];
        const int m = hasher_clz(g ^ target);
        const float r = hasher_reward(g, keys[p], keys[population + p], keys[2 * population + p], target, m,
                                      sh->difficulty, sh->w_alignment, sh->w_stability, sh->w_format);
        rewards[p] = hasher_float_bits(r);
        if (m > best_matched || (m == best_matched && r > best_reward)) {
          best_index = (int)p;
          best_matched = m;
          best_reward = r;
        }
        max_reward = r > max_reward ? r : max_reward;
        if (sh->grpo) {  // advantage score b·32: an integer, so its sum (and mean) is exact
          const int q = 32 - hasher_popc(g ^ target) + (m >= epoch_bits ? HASHER_PREFIX_SCORE : 0);
          scores[p] = (hasher_u32)q;
          total += q;
        }
      }
      sh->part_index[t] = best_index;
      sh->part_matched[t] = best_matched;
      sh->part_reward[t] = best_reward;
      sh->part_max[t] = max_reward;
      sh->part_total[t] = total;
      for (int b = t; b <= HASHER_MAX_SCORE; b += HASHER_THREADS) sh->bucket[b] = 0;
    }

    HASHER_PHASE(t) {  // leaves of the mean reward; the score histogram (counts: order-free)
      const hasher_u32* rewards = hasher_pop(mem, sh, HASHER_POP_REWARD);
      const hasher_u32* leaves = hasher_leaves(mem, sh);
      hasher_u32* leaf_sums = hasher_scratch(mem, sh, HASHER_ELITE_FIELDS);
      for (hasher_u32 i = t; i < sh->n_leaves; i += HASHER_THREADS)
        leaf_sums[i] = hasher_float_bits(hasher_leaf_sum(rewards, leaves[2 * i], leaves[2 * i + 1]));
      if (sh->grpo) {
        const hasher_u32 population = sh->population;
        const hasher_u32* scores = hasher_pop(mem, sh, HASHER_POP_SCORE);
        int* bucket = sh->bucket;
        for (hasher_u32 p = t; p < population; p += HASHER_THREADS) hasher_atomic_add(&bucket[scores[p]], 1);
      }
    }

    HASHER_PHASE(t) {  // one thread: the generation's best, the frame's best, finished or not
      if (t == 0) {
        const hasher_u32 population = sh->population;
        int pick = -1, pick_matched = -1;
        float pick_reward = 0.0f, max_reward = hasher_bits_float(0xff800000u);
        for (int u = 0; u < HASHER_THREADS; ++u) {
          const int i = sh->part_index[u];
          if (i < 0) continue;
          const int m = sh->part_matched[u];
          const float r = sh->part_reward[u];
          // Most bits matched, then highest reward, then first in population order.
          if (m > pick_matched || (m == pick_matched && (r > pick_reward || (r == pick_reward && i < pick)))) {
            pick = i;
            pick_matched = m;
            pick_reward = r;
          }
          max_reward = sh->part_max[u] > max_reward ? sh->part_max[u] : max_reward;
        }
        if (pick_matched > sh->best_matched || (pick_matched == sh->best_matched && pick_reward > sh->best_reward)) {
          const hasher_u32* seeds = hasher_pop(mem, sh, HASHER_POP_SEED);
          sh->best_matched = pick_matched;
          sh->best_reward = pick_reward;
          for (int w = 0; w < HASHER_SEED_WORDS; ++w) sh->best_seed[w] = seeds[w * population + pick];
          sh->best_golden = hasher_pop(mem, sh, HASHER_POP_GOLDEN)[pick];
        }
        const hasher_u32 ran = population - sh->first;
        sh->evaluations += ran;
        sh->evaluated += ran;
        const hasher_u32 g = sh->generation;
        if (g < mem.history_capacity) {
          const float sum = hasher_run_plan(hasher_program(mem, sh), sh->n_program,
                                            hasher_scratch(mem, sh, HASHER_ELITE_FIELDS), sh->stack);
          hasher_atomic_add(mem.history_frames + g, 1u);
          hasher_atomic_add(mem.history_mean + g, (double)hasher_fdiv(sum, (float)population));
          hasher_atomic_add(mem.history_best + g, (double)max_reward);
          hasher_atomic_max(mem.counters + HASHER_COUNTER_REACHED, (hasher_u64)g + 1);
        }
        sh->left -= 1;
        sh->done = sh->best_matched >= sh->difficulty || g + 1 >= sh->max_generations;
        if (sh->done) {
          hasher_write_record(mem, sh);
          sh->frame = HASHER_NO_FRAME;
        } else if (sh->grpo) {
          int total = 0;
          for (int u = 0; u < HASHER_THREADS; ++u) total += sh->part_total[u];
          sh->mean = hasher_fdiv(hasher_fmul((float)total, inv32), (float)population);
          int start = 0;  // each score's first place in the stable descending order
          for (int q = HASHER_MAX_SCORE; q >= 0; --q) {
            const int count = sh->bucket[q];
            sh->bucket[q] = start;
            start += count;
          }
        }
      }
    }
    HASHER_BARRIER();
    if (sh->done) continue;

    if (sh->grpo) {
      HASHER_PHASE(t) {  // squared deviations of the advantage scores
        const float mean = sh->mean;
        const hasher_u32* scores = hasher_pop(mem, sh, HASHER_POP_SCORE);
        hasher_u32* squares = hasher_pop(mem, sh, HASHER_POP_SQUARE);
        for (hasher_u32 p = t; p < sh->population; p += HASHER_THREADS) {
          const float c = hasher_fsub(hasher_fmul((float)scores[p], inv32), mean);
          squares[p] = hasher_float_bits(hasher_fmul(c, c));
        }
      }
      HASHER_PHASE(t) {
        const hasher_u32* squares = hasher_pop(mem, sh, HASHER_POP_SQUARE);
        const hasher_u32* leaves = hasher_leaves(mem, sh);
        hasher_u32* leaf_sums = hasher_scratch(mem, sh, HASHER_ELITE_FIELDS);
        for (hasher_u32 i = t; i < sh->n_leaves; i += HASHER_THREADS)
          leaf_sums[i] = hasher_float_bits(hasher_leaf_sum(squares, leaves[2 * i], leaves[2 * i + 1]));
      }
      HASHER_PHASE(t) {  // one thread: the standard deviation and the elites' stable order
        if (t == 0) {
          const hasher_u32 population = sh->population;
          const int elites = (int)sh->elites;
          const float sum = hasher_run_plan(hasher_program(mem, sh), sh->n_program,
                                            hasher_scratch(mem, sh, HASHER_ELITE_FIELDS), sh->stack);
          sh->std = hasher_fsqrt(hasher_fdiv(sum, (float)population));
          const hasher_u32* scores = hasher_pop(mem, sh, HASHER_POP_SCORE);
          hasher_u32* order = hasher_scratch(mem, sh, HASHER_ELITE_ORDER);
          int lowest = HASHER_MAX_SCORE;  // scores below it cannot reach an elite place
          while (lowest > 0 && sh->bucket[lowest] < elites) --lowest;
          if (sh->bucket[lowest] >= elites) ++lowest;
          for (hasher_u32 p = 0; p < population; ++p) {
            const int q = (int)scores[p];
            if (q < lowest) continue;
            const int place = sh->bucket[q]++;
            if (place < elites) order[place] = p;
          }
        }
      }
      HASHER_PHASE(t) {  // the elites (seed, golden, keys) and their advantages, aside
        const hasher_u32 population = sh->population, elites = sh->elites;
        const float mean = sh->mean, std = sh->std;
        const hasher_u32* seeds = hasher_pop(mem, sh, HASHER_POP_SEED);
        const hasher_u32* golden = hasher_pop(mem, sh, HASHER_POP_GOLDEN);
        const hasher_u32* keys = hasher_pop(mem, sh, HASHER_POP_KEYS);
        const hasher_u32* scores = hasher_pop(mem, sh, HASHER_POP_SCORE);
        const hasher_u32* order = hasher_scratch(mem, sh, HASHER_ELITE_ORDER);
        hasher_u32* elite_seeds = hasher_scratch(mem, sh, HASHER_ELITE_SEED);
        hasher_u32* elite_golden = hasher_scratch(mem, sh, HASHER_ELITE_GOLDEN);
        hasher_u32* elite_keys = hasher_scratch(mem, sh, HASHER_ELITE_KEYS);
        hasher_u32* elite_advantage = hasher_scratch(mem, sh, HASHER_ELITE_ADVANTAGE);
        for (hasher_u32 e = t; e < elites; e += HASHER_THREADS) {
          const hasher_u32 src = order[e];
          for (int w = 0; w < HASHER_SEED_WORDS; ++w) elite_seeds[w * elites + e] = seeds[w * population + src];
          elite_golden[e] = golden[src];
          for (int k = 0; k < 3; ++k) elite_keys[k * elites + e] = keys[k * population + src];
          const float c = hasher_fsub(hasher_fmul((float)scores[src], inv32), mean);
          elite_advantage[e] = hasher_float_bits(std > 0.0f ? hasher_fdiv(c, std) : 0.0f);
        }
      }
      HASHER_PHASE(t) {  // the next population: elites first, one mutant each, fresh seeds after
        const hasher_u32 population = sh->population, elites = sh->elites, mutants = sh->mutants;
        const hasher_u64 next = (hasher_u64)sh->generation + 1;
        const hasher_u64 mutation = hasher_stream_base(sh->key, next, HASHER_STREAM_MUTATION);
        const hasher_u64 fresh = hasher_stream_base(sh->key, next, HASHER_STREAM_FRESH);
        hasher_u32* seeds = hasher_pop(mem, sh, HASHER_POP_SEED);
        hasher_u32* golden = hasher_pop(mem, sh, HASHER_POP_GOLDEN);
        hasher_u32* keys = hasher_pop(mem, sh, HASHER_POP_KEYS);
        const hasher_u32* elite_seeds = hasher_scratch(mem, sh, HASHER_ELITE_SEED);
        const hasher_u32* elite_golden = hasher_scratch(mem, sh, HASHER_ELITE_GOLDEN);
        const hasher_u32* elite_keys = hasher_scratch(mem, sh, HASHER_ELITE_KEYS);
        const hasher_u32* elite_advantage = hasher_scratch(mem, sh, HASHER_ELITE_ADVANTAGE);
        for (hasher_u32 e = t; e < elites; e += HASHER_THREADS) {
          for (int w = 0; w < HASHER_SEED_WORDS; ++w) seeds[w * population + e] = elite_seeds[w * elites + e];
          golden[e] = elite_golden[e];
          for (int k = 0; k < 3; ++k) keys[k * population + e] = elite_keys[k * elites + e];
        }
        for (hasher_u32 e = t; e < mutants; e += HASHER_THREADS) {
          hasher_u32 parent[HASHER_SEED_WORDS], child[HASHER_SEED_WORDS];
          for (int w = 0; w < HASHER_SEED_WORDS; ++w) parent[w] = elite_seeds[w * elites + e];
          hasher_mutant(parent, hasher_bits_float(elite_advantage[e]), hasher_stream_word(mutation, 2 * (hasher_u64)e),
                        hasher_stream_word(mutation, 2 * (hasher_u64)e + 1), child);
          for (int w = 0; w < HASHER_SEED_WORDS; ++w) seeds[w * population + elites + e] = child[w];
        }
        for (hasher_u32 k = t; k < population - elites - mutants; k += HASHER_THREADS) {
          hasher_u32 seed[HASHER_SEED_WORDS];
          hasher_fresh_seed(fresh, k, seed);
          for (int w = 0; w < HASHER_SEED_WORDS; ++w) seeds[w * population + elites + mutants + k] = seed[w];
        }
      }
      HASHER_PHASE(t) {  // one thread: climb the schedule with the best seed so far
        if (t == 0) {
          const hasher_u32* epochs = hasher_epochs(mem);
          const hasher_u32 n_epochs = sh->n_epochs;
          hasher_u32 climbed = 0;
          while (climbed < n_epochs && (int)epochs[climbed] <= sh->best_matched) ++climbed;
          sh->epoch = climbed < n_epochs ? climbed : n_epochs - 1;
          sh->first = sh->elites;
          sh->generation += 1;
        }
      }
    } else {
      HASHER_PHASE(t) {  // the next block of consecutive nonces
        const hasher_u32 population = sh->population;
        const hasher_u64 next = (hasher_u64)sh->generation + 1;
        hasher_u32* seeds = hasher_pop(mem, sh, HASHER_POP_SEED);
        for (hasher_u32 p = t; p < population; p += HASHER_THREADS) {
          hasher_u32 seed[HASHER_SEED_WORDS];
          hasher_scan_seed(sh->key, next, population, p, seed);
          for (int w = 0; w < HASHER_SEED_WORDS; ++w) seeds[w * population + p] = seed[w];
        }
      }
      HASHER_PHASE(t) {
        if (t == 0) {
          sh->first = 0;
          sh->generation += 1;
        }
      }
    }
  }
  HASHER_PHASE(t) {
    if (t == 0) {
      hasher_save_slot(sh, mem.state + (hasher_u64)sh->slot * HASHER_STATE_WORDS);
      hasher_atomic_add(mem.counters + HASHER_COUNTER_EVALUATIONS, sh->evaluated);
      hasher_atomic_max(mem.counters + HASHER_COUNTER_LONGEST, (hasher_u64)(mem.generations - sh->left));
    }
  }
}

#ifdef __CUDACC__

extern "C" __global__ void __launch_bounds__(HASHER_SEARCH_BLOCK, HASHER_SEARCH_MIN_BLOCKS)
    hasher_search(const hasher_u32* __restrict__ config, hasher_u32* __restrict__ state,
                  hasher_u32* __restrict__ population, hasher_u32* __restrict__ scratch,
                  const hasher_u32* __restrict__ queue, hasher_u64* __restrict__ counters,
                  hasher_u32* __restrict__ records, hasher_u32* __restrict__ history_frames,
                  double* __restrict__ history_mean, double* __restrict__ history_best, hasher_u32 ring_mask,
                  hasher_u32 history_capacity, hasher_u32 generations) {
  __shared__ hasher_search_shared sh;
  const hasher_search_memory mem = {config,       state,        population, scratch,          queue,
                                    counters,     records,      history_frames, history_mean, history_best,
                                    ring_mask,    history_capacity, generations};
  hasher_search_block(mem, blockIdx.x, (int)blockDim.x, &sh);
}

#else

// The host build: the blocks of one launch, one after another. reverse_threads runs each phase's
// threads last to first (a test that no phase depends on the order of its threads).
extern "C" void hasher_search_host(const hasher_u32* config, hasher_u32* state, hasher_u32* population,
                                   hasher_u32* scratch, const hasher_u32* queue, hasher_u64* counters,
                                   hasher_u32* records, hasher_u32* history_frames, double* history_mean,
                                   double* history_best, hasher_u32 ring_mask, hasher_u32 history_capacity,
                                   hasher_u32 generations, hasher_u32 blocks, int threads, int reverse_threads) {
  hasher_host_reverse_threads = reverse_threads;
  const hasher_search_memory mem = {config,       state,        population, scratch,          queue,
                                    counters,     records,      history_frames, history_mean, history_best,
                                    ring_mask,    history_capacity, generations};
  for (hasher_u32 b = 0; b < blocks; ++b) {
    hasher_search_shared sh = {};
    hasher_search_block(mem, b, threads, &sh);
  }
}

// The building blocks one by one, for tests against hasher_core/search/fused.py.
extern "C" void hasher_host_fresh_seed(hasher_u64 base, hasher_u32 k, hasher_u32* seed) {
  hasher_fresh_seed(base, k, seed);
}
extern "C" void hasher_host_scan_seed(hasher_u64 key, hasher_u64 generation, hasher_u32 population, hasher_u32 i,
                                      hasher_u32* seed) {
  hasher_scan_seed(key, generation, population, i, seed);
}
extern "C" void hasher_host_mutant(const hasher_u32* parent, float advantage, hasher_u64 w_nonce,
                                   hasher_u64 w_extranonce, hasher_u32* child) {
  hasher_mutant(parent, advantage, w_nonce, w_extranonce, child);
}
extern "C" float hasher_host_reward(hasher_u32 golden, const hasher_u32* keys, hasher_u32 target, int difficulty,
                                    const float* weights) {
  return hasher_reward(golden, keys[0], keys[1], keys[2], target, hasher_clz(golden ^ target), difficulty,
                       weights[0], weights[1], weights[2]);
}
extern "C" float hasher_host_pairwise(const hasher_u32* bits, const hasher_u32* leaves, hasher_u32 n_leaves,
                                      const hasher_u32* program, hasher_u32 n_program, hasher_u32* leaf_sums) {
  float stack[64];
  for (hasher_u32 i = 0; i < n_leaves; ++i)
    leaf_sums[i] = hasher_float_bits(hasher_leaf_sum(bits, leaves[2 * i], leaves[2 * i + 1]));
  return hasher_run_plan(program, n_program, leaf_sums, stack);
}

#endif
