"""Every DESIGN number, in one place: frames, embeddings, vocabulary, header layout, recursion.

The reference, CPU and CUDA backends, the mapper, the search, the bundle and the ASIC emulator all
read these; the CUDA source gets them through generated ``#define`` lines
(``hasher_resources/sha256/cuda.py``), so a change here cannot drift between implementations.
"""

from __future__ import annotations

#: Bumped whenever anything that changes a seed's golden or what it is searched for changes; part of
#: every fingerprint. v2: the token-aligned target word of DESIGN §4.3 (v1 put the token in the low bits).
ALGORITHM_VERSION = "hasher-recursion-v2"

#: Slots (32-bit words) per neural frame (DESIGN §3.4).
SLOT_COUNT = 12
#: Signed 16-bit features per frame: two per slot, even features in the high half (DESIGN §3.4).
FEATURE_COUNT = 2 * SLOT_COUNT
#: Embedding length of the knowledge base and of the projection's columns (DESIGN §2, §3.4).
EMBEDDING_DIMS = 768
#: Go ``math/rand`` seed of the default 24 × 768 projection (DESIGN §3.4).
PROJECTION_SEED = 1337
#: Window size W and stride S of the default frames (DESIGN §3.2).
WINDOW_SIZE = 128
STRIDE = 1

SEED_BYTES = 32
HEADER_BYTES = 80
PASSES = 21
#: Double SHA-256 of the 80-byte header per evaluation: one per pass and one for the golden.
HASHES_PER_EVALUATION = PASSES + 1
#: SHA-256 compressions per double SHA-256 of the header: its two 64-byte blocks, then the re-hash.
COMPRESSIONS_PER_HASH = 3
#: The passes whose keys feed the reward's stability term (DESIGN §4.3).
STABILITY_PASSES = (18, 19, 20)

HEADER_VERSION = 2  # bytes 0–3, little-endian
HEADER_BITS = 0x1D00FFFF  # bytes 72–75, little-endian

# Byte offsets inside the 80-byte header (the version sits at 0).
OFFSET_SLOTS = 4  # 12 slots, big-endian, bytes 4–51
OFFSET_EXTRANONCE = 52  # seed bytes 0–15
OFFSET_TIME = 68
OFFSET_BITS = 72
OFFSET_NONCE = 76  # big-endian value of seed bytes 28–31, written little-endian

#: Seed bytes that go into the header as the extranonce, and the nonce bytes.
EXTRANONCE_BYTES = 16
SEED_NONCE_OFFSET = 28
#: Header bytes a Bitcoin midstate does not cover: 64–75 (merkle tail, time, bits); the nonce follows.
TAIL_BYTES = OFFSET_NONCE - 64

#: The recursion rewrites header words 9–12 (bytes 36–51, slots 8–11) big-endian.
MUTATED_WORD_FIRST = 9
MUTATED_WORD_COUNT = 4

# Jitter (DESIGN §4.2): passes [0, 8) use s[1]; [8, 15) rotl16 and s[2]; [15, 21) s[3] with a branch.
JITTER_PHASE2_START = 8
JITTER_PHASE3_START = 15
JITTER_CLZ_THRESHOLD = 12
JITTER_LOW_CLZ_XOR = 0xBADF00D5
JITTER_HIGH_CLZ_XOR = 0xFEEDFACE

#: The tokenizer (DESIGN §3.1) and the SHA-256 of its decompressed BPE ranks, the value tiktoken pins.
TOKENIZER = "cl100k_base"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
#: Where a frame's embedding comes from (DESIGN §3.3): its own window's context (the default) or the
#: chunk's knowledge-base embedding.
EMBEDDING_SOURCES = ("window", "chunk")
#: The offline embedding's feature set (DESIGN §3.3); part of every recipe that uses it.
HASHING_VERSION = "hashing-v2"
#: cl100k_base's vocabulary size (DESIGN §3.1): ids below it are tokens.
VOCABULARY_SIZE = 100277
#: DESIGN §4.3: a token id fits 17 bits, and sits in the top 17 bits of the 32-bit target word
#: (``T = token << TOKEN_SHIFT``; the token a golden stands for is ``golden >> TOKEN_SHIFT``), so the
#: hash's leading bits are the token ("big-endian synchronisation").
TOKEN_BITS = 17
TOKEN_SHIFT = 32 - TOKEN_BITS
#: The default difficulty: the top 17 bits, an exact token (about 2^17 evaluations per frame).
DIFFICULTY_BITS = TOKEN_BITS

#: SHA-256 initial state and round constants (FIPS 180-4), for the backends that compress by hand.
SHA256_IV = (
    0x6A09E667,
    0xBB67AE85,
    0x3C6EF372,
    0xA54FF53A,
    0x510E527F,
    0x9B05688C,
    0x1F83D9AB,
    0x5BE0CD19,
)
SHA256_K = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
)  # fmt: skip
