// The CUDA backend's device code: DESIGN §4.2 (21-pass recursion) and plain Bitcoin nonce search
// from a midstate (the header scan and the ASIC emulator's work items both reduce to it).
//
// One thread runs one evaluation from header construction to golden, entirely in registers: no
// per-pass launches, no shared or local memory. Constants (HASHER_*) are not written here; cuda.py
// prepends #define lines generated from hasher_core/design.py, so this file cannot drift from the Python
// backends. The same device functions compile as host C++ (g++ -x c++) so the test suite checks the
// arithmetic against the hashlib reference on machines without a GPU.

#ifndef HASHER_PASSES
#error "compile through hasher_resources.sha256.cuda.cuda_source(): the HASHER_* constants are generated"
#endif

typedef unsigned int hasher_u32;
typedef unsigned char hasher_u8;

#ifdef __CUDACC__
#define HASHER_FN __device__ __forceinline__
#define HASHER_UNROLL _Pragma("unroll")
#define HASHER_NO_UNROLL _Pragma("unroll 1")
__constant__ hasher_u32 hasher_k[64] = {HASHER_SHA256_K};
HASHER_FN hasher_u32 hasher_rotr(hasher_u32 x, int n) { return __funnelshift_r(x, x, n); }
HASHER_FN hasher_u32 hasher_bswap(hasher_u32 x) { return __byte_perm(x, 0, 0x0123); }
HASHER_FN int hasher_clz(hasher_u32 x) { return __clz(x); }
#else
#define HASHER_FN static inline
#define HASHER_UNROLL _Pragma("GCC unroll 64")
#define HASHER_NO_UNROLL
static const hasher_u32 hasher_k[64] = {HASHER_SHA256_K};
HASHER_FN hasher_u32 hasher_rotr(hasher_u32 x, int n) { return (x >> n) | (x << (32 - n)); }
HASHER_FN hasher_u32 hasher_bswap(hasher_u32 x) { return __builtin_bswap32(x); }
HASHER_FN int hasher_clz(hasher_u32 x) { return x ? __builtin_clz(x) : 32; }
#endif

static_assert(HASHER_MUTATED_WORD_FIRST == 9 && HASHER_MUTATED_WORD_COUNT == 4,
              "the code below keeps header words 9-12 in named registers");
static_assert(HASHER_STABILITY_PASS_0 + 2 == HASHER_PASSES - 1, "stability keys are the last three passes");

// Rounds first..63 of one SHA-256 block on state v; w holds the 16 block words and is overwritten
// by the rolling message schedule. Fully unrolled so every index is a constant (registers only).
HASHER_FN void hasher_rounds(hasher_u32 v[8], hasher_u32 w[16], const int first) {
  HASHER_UNROLL
  for (int t = 0; t < 64; ++t) {
    if (t >= 16) {
      const hasher_u32 x = w[(t - 15) & 15], y = w[(t - 2) & 15];
      w[t & 15] += (hasher_rotr(x, 7) ^ hasher_rotr(x, 18) ^ (x >> 3)) + w[(t - 7) & 15] +
                   (hasher_rotr(y, 17) ^ hasher_rotr(y, 19) ^ (y >> 10));
    }
    if (t < first) continue;
    const hasher_u32 a = v[0], b = v[1], c = v[2], d = v[3], e = v[4], f = v[5], g = v[6], h = v[7];
    const hasher_u32 t1 = h + (hasher_rotr(e, 6) ^ hasher_rotr(e, 11) ^ hasher_rotr(e, 25)) +
                          (g ^ (e & (f ^ g))) + hasher_k[t] + w[t & 15];
    const hasher_u32 t2 = (hasher_rotr(a, 2) ^ hasher_rotr(a, 13) ^ hasher_rotr(a, 22)) + ((a & b) | (c & (a | b)));
    v[7] = g; v[6] = f; v[5] = e; v[4] = d + t1;
    v[3] = c; v[2] = b; v[1] = a; v[0] = t1 + t2;
  }
}

HASHER_FN void hasher_iv(hasher_u32 v[8]) {
  v[0] = HASHER_SHA256_IV_0; v[1] = HASHER_SHA256_IV_1; v[2] = HASHER_SHA256_IV_2; v[3] = HASHER_SHA256_IV_3;
  v[4] = HASHER_SHA256_IV_4; v[5] = HASHER_SHA256_IV_5; v[6] = HASHER_SHA256_IV_6; v[7] = HASHER_SHA256_IV_7;
}

// Second SHA-256 over a 32-byte digest s; returns the full final state in out.
HASHER_FN void hasher_hash_digest(const hasher_u32 s[8], hasher_u32 out[8]) {
  hasher_u32 w[16];
  HASHER_UNROLL
  for (int i = 0; i < 8; ++i) w[i] = s[i];
  w[8] = 0x80000000u;  // terminator and length are constants, so the compiler folds their schedule terms
  HASHER_UNROLL
  for (int i = 9; i < 15; ++i) w[i] = 0;
  w[15] = 256;
  hasher_iv(out);
  hasher_rounds(out, w, 0);
  out[0] += HASHER_SHA256_IV_0; out[1] += HASHER_SHA256_IV_1; out[2] += HASHER_SHA256_IV_2;
  out[3] += HASHER_SHA256_IV_3; out[4] += HASHER_SHA256_IV_4; out[5] += HASHER_SHA256_IV_5;
  out[6] += HASHER_SHA256_IV_6; out[7] += HASHER_SHA256_IV_7;
}

// Block 2 of the 80-byte header: words 16-19 then padding for a 640-bit message, from state s.
HASHER_FN void hasher_header_tail(hasher_u32 s[8], hasher_u32 w16, hasher_u32 w17, hasher_u32 w18,
                                  hasher_u32 w19) {
  hasher_u32 w[16] = {w16, w17, w18, w19, 0x80000000u, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 640};
  hasher_u32 v[8];
  HASHER_UNROLL
  for (int i = 0; i < 8; ++i) v[i] = s[i];
  hasher_rounds(v, w, 0);
  HASHER_UNROLL
  for (int i = 0; i < 8; ++i) s[i] += v[i];
}

HASHER_FN hasher_u32 hasher_jitter(int pass, hasher_u32 key, hasher_u32 s1, hasher_u32 s2, hasher_u32 s3) {
  if (pass < HASHER_JITTER_PHASE2_START) return key ^ s1;
  if (pass < HASHER_JITTER_PHASE3_START) return hasher_rotr(key, 16) ^ s2;
  const hasher_u32 d = key ^ s3;
  return hasher_clz(d) < HASHER_JITTER_CLZ_THRESHOLD ? key ^ HASHER_JITTER_LOW_CLZ_XOR
                                                     : d ^ HASHER_JITTER_HIGH_CLZ_XOR;
}

// One evaluation. slots: the frame's 12 slots; seed_le: the 32 seed bytes read as 8 little-endian
// words (how they sit in memory). Writes the golden and the keys of the three stability passes.
HASHER_FN void hasher_evaluate_one(const hasher_u32 slots[12], const hasher_u32 seed_le[8],
                                   hasher_u32 header_time, hasher_u32* golden, hasher_u32 keys[3]) {
  // Header words as SHA-256 reads them (big-endian): version and bits are little-endian fields,
  // the nonce is seed bytes 28-31 reversed, which is exactly their little-endian word.
  hasher_u32 w[16];
  w[0] = hasher_bswap(HASHER_HEADER_VERSION);
  HASHER_UNROLL
  for (int i = 0; i < 12; ++i) w[1 + i] = slots[i];
  w[13] = hasher_bswap(seed_le[0]); w[14] = hasher_bswap(seed_le[1]); w[15] = hasher_bswap(seed_le[2]);
  const hasher_u32 w16 = hasher_bswap(seed_le[3]), w17 = hasher_bswap(header_time),
                   w18 = hasher_bswap(HASHER_HEADER_BITS), w19 = seed_le[7];
  // Rounds 0-8 of block 1 read only words 0-8, which no pass changes: run them once.
  hasher_u32 mid[8];
  hasher_iv(mid);
  HASHER_UNROLL
  for (int t = 0; t < HASHER_MUTATED_WORD_FIRST; ++t) {
    const hasher_u32 a = mid[0], b = mid[1], c = mid[2], d = mid[3], e = mid[4], f = mid[5], g = mid[6],
                     h = mid[7];
    const hasher_u32 t1 = h + (hasher_rotr(e, 6) ^ hasher_rotr(e, 11) ^ hasher_rotr(e, 25)) +
                          (g ^ (e & (f ^ g))) + hasher_k[t] + w[t];
    const hasher_u32 t2 = (hasher_rotr(a, 2) ^ hasher_rotr(a, 13) ^ hasher_rotr(a, 22)) + ((a & b) | (c & (a | b)));
    mid[7] = g; mid[6] = f; mid[5] = e; mid[4] = d + t1;
    mid[3] = c; mid[2] = b; mid[1] = a; mid[0] = t1 + t2;
  }
  const hasher_u32 s1 = slots[1], s2 = slots[2], s3 = slots[3];
  hasher_u32 m0 = w[9], m1 = w[10], m2 = w[11], m3 = w[12];
  hasher_u32 k0 = 0, k1 = 0, k2 = 0;
  HASHER_NO_UNROLL
  for (int pass = 0; pass <= HASHER_PASSES; ++pass) {
    hasher_u32 block[16];
    HASHER_UNROLL
    for (int i = 0; i < 16; ++i) block[i] = w[i];
    block[9] = m0; block[10] = m1; block[11] = m2; block[12] = m3;
    hasher_u32 s[8];
    HASHER_UNROLL
    for (int i = 0; i < 8; ++i) s[i] = mid[i];
    hasher_rounds(s, block, HASHER_MUTATED_WORD_FIRST);
    s[0] += HASHER_SHA256_IV_0; s[1] += HASHER_SHA256_IV_1; s[2] += HASHER_SHA256_IV_2;
    s[3] += HASHER_SHA256_IV_3; s[4] += HASHER_SHA256_IV_4; s[5] += HASHER_SHA256_IV_5;
    s[6] += HASHER_SHA256_IV_6; s[7] += HASHER_SHA256_IV_7;
    hasher_header_tail(s, w16, w17, w18, w19);
    hasher_u32 d[8];
    hasher_hash_digest(s, d);
    const hasher_u32 key = d[0];  // BE32 of the digest is its first state word
    if (pass == HASHER_PASSES) {
      *golden = key;
      keys[0] = k0;
      keys[1] = k1;
      keys[2] = k2;
      break;
    }
    // Named comparisons, not keys[pass - 18]: a dynamic index would put keys in local memory.
    if (pass == HASHER_STABILITY_PASS_0) k0 = key;
    if (pass == HASHER_STABILITY_PASS_0 + 1) k1 = key;
    if (pass == HASHER_STABILITY_PASS_0 + 2) k2 = key;
    const hasher_u32 j = hasher_jitter(pass, key, s1, s2, s3);
    // word 9+i ^= rotl32(j, 8i)
    m0 ^= j; m1 ^= hasher_rotr(j, 24); m2 ^= hasher_rotr(j, 16); m3 ^= hasher_rotr(j, 8);
  }
}

// Leading zero bits of an 80-byte header's double SHA-256 read as a Bitcoin hash (byte-reversed),
// from the midstate of bytes 0-63 and the big-endian words 16-19.
HASHER_FN int hasher_header_zero_bits(const hasher_u32 mid[8], hasher_u32 w16, hasher_u32 w17, hasher_u32 w18,
                                      hasher_u32 w19) {
  hasher_u32 s[8];
  HASHER_UNROLL
  for (int i = 0; i < 8; ++i) s[i] = mid[i];
  hasher_header_tail(s, w16, w17, w18, w19);
  hasher_u32 d[8];
  hasher_hash_digest(s, d);
  int bits = 0;
  HASHER_UNROLL
  for (int i = 7; i >= 0; --i) {
    const int z = hasher_clz(hasher_bswap(d[i]));
    bits += z;
    if (z < 32) break;
  }
  return bits > 255 ? 255 : bits;
}

// One nonce of a midstate scan (what one thread of hasher_scan_midstate computes; the host build of
// the tests runs it too). mid [8]: the state after header bytes 0-63; tail [3]: big-endian header
// words 16-18 (bytes 64-75).
HASHER_FN int hasher_midstate_scan_one(const hasher_u32* mid, const hasher_u32* tail, hasher_u32 nonce) {
  hasher_u32 m[8];
  HASHER_UNROLL
  for (int t = 0; t < 8; ++t) m[t] = mid[t];
  // The nonce sits little-endian in bytes 76-79, so its big-endian message word is byte-swapped.
  return hasher_header_zero_bits(m, tail[0], tail[1], tail[2], hasher_bswap(nonce));
}

// The nonce at position p of windows laid end to end: window_size consecutive nonces (mod 2^32) from
// each of starts, so p is offset p % window_size of window p / window_size. One window (starts[0],
// window_size = the scan's length) is a plain contiguous scan.
HASHER_FN hasher_u32 hasher_window_nonce(const hasher_u32* starts, unsigned long long window_size,
                                         unsigned long long p) {
  const unsigned long long window = p / window_size;
  return starts[window] + (hasher_u32)(p - window * window_size);
}

// DESIGN §4.3: the word a golden is matched against holds the token in its top 17 bits, so the
// hash's leading bits are the token; token(golden) = golden >> HASHER_TOKEN_SHIFT.
HASHER_FN hasher_u32 hasher_target_word(hasher_u32 token_id) {
  return token_id << HASHER_TOKEN_SHIFT;
}

// HASHER_DEVICE_FUNCTIONS_ONLY: device_search.cu uses the functions above, not these kernels.
#if defined(__CUDACC__) && !defined(HASHER_DEVICE_FUNCTIONS_ONLY)

// slots [n,12], seeds [n,8] (the 32 seed bytes as little-endian words), golden [n], keys [n,3].
extern "C" __global__ void __launch_bounds__(HASHER_CUDA_BLOCK, HASHER_CUDA_MIN_BLOCKS)
    hasher_evaluate(const hasher_u32* __restrict__ slots, const hasher_u32* __restrict__ seeds,
                    hasher_u32 header_time, hasher_u32* __restrict__ golden, hasher_u32* __restrict__ keys,
                    unsigned long long n) {
  const unsigned long long row = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= n) return;
  hasher_u32 sl[12], sd[8], k[3], g;
  HASHER_UNROLL
  for (int i = 0; i < 12; ++i) sl[i] = slots[row * 12 + i];
  HASHER_UNROLL
  for (int i = 0; i < 8; ++i) sd[i] = seeds[row * 8 + i];
  hasher_evaluate_one(sl, sd, header_time, &g, k);
  golden[row] = g;
  keys[row * 3 + 0] = k[0];
  keys[row * 3 + 1] = k[1];
  keys[row * 3 + 2] = k[2];
}

// One frame (slots [12]) and extranonce ([4] little-endian words); nonce nonce_start + i (mod 2^32).
// Writes each golden and how many leading bits it shares with the target word of target_token_id
// (32 when equal), so the sweep can be reduced to hits and the best nonce on the device.
extern "C" __global__ void __launch_bounds__(HASHER_CUDA_BLOCK, HASHER_CUDA_MIN_BLOCKS)
    hasher_scan_seed(const hasher_u32* __restrict__ slots, const hasher_u32* __restrict__ extranonce,
                     hasher_u32 nonce_start, hasher_u32 header_time, hasher_u32 target_token_id,
                     hasher_u32* __restrict__ golden, hasher_u8* __restrict__ matched_bits,
                     unsigned long long count) {
  const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  hasher_u32 sl[12], sd[8], k[3], g;
  HASHER_UNROLL
  for (int t = 0; t < 12; ++t) sl[t] = slots[t];
  sd[0] = extranonce[0]; sd[1] = extranonce[1]; sd[2] = extranonce[2]; sd[3] = extranonce[3];
  sd[4] = 0; sd[5] = 0; sd[6] = 0;
  sd[7] = hasher_bswap(nonce_start + (hasher_u32)i);  // seed bytes 28-31 hold the nonce big-endian
  hasher_evaluate_one(sl, sd, header_time, &g, k);
  golden[i] = g;
  matched_bits[i] = (hasher_u8)hasher_clz(g ^ hasher_target_word(target_token_id));
}

// Bitcoin nonce search from a midstate (a header scan passes its own) over windows of nonces: thread
// i hashes position skip + i of the windows laid end to end (hasher_window_nonce), so windows far
// smaller than a block (the ASIC emulator's chip windows) still fill every thread of one launch.
extern "C" __global__ void __launch_bounds__(HASHER_CUDA_BLOCK, HASHER_CUDA_MIN_BLOCKS)
    hasher_scan_midstate(const hasher_u32* __restrict__ mid, const hasher_u32* __restrict__ tail,
                         const hasher_u32* __restrict__ starts, unsigned long long window_size,
                         unsigned long long skip, hasher_u8* __restrict__ zero_bits, unsigned long long count) {
  const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  zero_bits[i] = (hasher_u8)hasher_midstate_scan_one(mid, tail, hasher_window_nonce(starts, window_size, skip + i));
}

#endif
