/*
 * CRC-32C (Castagnoli) with a run-time choice of implementation.
 * See crc32c_impl.h for the contract.
 *
 * Three paths compute the same function:
 *
 *   table   portable slicing-by-8: eight 256-entry tables, 8 input bytes per
 *           step. About 1-2 GB/s; works everywhere.
 *   sse4.2  x86_64 `crc32` instruction (_mm_crc32_u64), compiled with
 *           __attribute__((target("sse4.2"))) so the file needs no -msse4.2
 *           and the binary still runs on CPUs without it.
 *   armv8   aarch64 CRC32 extension (__crc32cd), target("+crc"), chosen when
 *           getauxval(AT_HWCAP) has HWCAP_CRC32.
 *
 * The hardware instruction has a latency of ~3 cycles but a throughput of
 * one per cycle, so a single dependency chain uses a third of the unit.
 * Large buffers are therefore cut into three adjacent blocks whose CRCs are
 * computed in parallel and then joined: CRC is linear over GF(2), so
 *     crc(A || B) = shift(crc(A), |B|) ^ crc_raw(B)
 * where shift() appends |B| zero bytes to a CRC register, done with four
 * table lookups from a precomputed "multiply by x^(8|B|) mod P" operator
 * (Mark Adler's technique, also used by zlib's crc32_combine).
 */
#include "crc32c_impl.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Reflected Castagnoli polynomial. */
#define POLY 0x82F63B78u

/* Block sizes of the three-way interleaved hardware loop. */
#define LONG_BLOCK 8192
#define SHORT_BLOCK 256

/* crc_table[k][b]: CRC register after feeding byte b followed by k zero bytes. */
static uint32_t crc_table[8][256];
/* Operators that append LONG_BLOCK / SHORT_BLOCK zero bytes to a register. */
static uint32_t crc_long[4][256];
static uint32_t crc_short[4][256];

typedef uint32_t (*crc_fn)(uint32_t, const unsigned char *, size_t);

static crc_fn crc_impl;          /* chosen implementation (raw register in/out) */
static const char *crc_backend;  /* its name */
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

/* ------------------------------------------------------------------------- */
/* Portable table path                                                       */
/* ------------------------------------------------------------------------- */

/* Little-endian 32-bit load from any alignment, without aliasing tricks. */
static inline uint32_t load_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) |
           ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Slicing-by-8 over the raw (already inverted) register. */
static uint32_t crc32c_table_raw(uint32_t crc, const unsigned char *p, size_t len)
{
    while (len >= 8) {
        uint32_t lo = load_le32(p) ^ crc;
        uint32_t hi = load_le32(p + 4);
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
              crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
              crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
              crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--) {
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }
    return crc;
}

/* ------------------------------------------------------------------------- */
/* Zero-append operators (for joining the interleaved hardware streams)      */
/* ------------------------------------------------------------------------- */

/* Multiply the 32x32 GF(2) matrix `mat` (one column per word) by `vec`. */
static uint32_t gf2_matrix_times(const uint32_t *mat, uint32_t vec)
{
    uint32_t sum = 0;
    while (vec) {
        if (vec & 1)
            sum ^= *mat;
        vec >>= 1;
        mat++;
    }
    return sum;
}

static void gf2_matrix_square(uint32_t *square, const uint32_t *mat)
{
    for (int n = 0; n < 32; n++)
        square[n] = gf2_matrix_times(mat, mat[n]);
}

/*
 * Build in `op` the operator that appends `len` zero bytes to a raw CRC
 * register. `len` must be a power of two (both block sizes are).
 */
static void crc32c_zeros_op(uint32_t *op, size_t len)
{
    uint32_t a[32], b[32];
    uint32_t *cur = a, *next = b, *tmp;

    /* Operator for one zero bit: shift right, fold the polynomial in. */
    a[0] = POLY;
    for (int n = 1; n < 32; n++)
        a[n] = 1u << (n - 1);
    /* Square three times: 2, 4, then 8 zero bits = one zero byte. */
    for (int i = 0; i < 3; i++) {
        gf2_matrix_square(next, cur);
        tmp = cur; cur = next; next = tmp;
    }
    /* Square once per remaining power of two of len. */
    while (len > 1) {
        gf2_matrix_square(next, cur);
        tmp = cur; cur = next; next = tmp;
        len >>= 1;
    }
    memcpy(op, cur, sizeof(a));
}

/* Expand an operator into four byte-indexed tables (one per register byte). */
static void crc32c_zeros(uint32_t zeros[4][256], size_t len)
{
    uint32_t op[32];
    crc32c_zeros_op(op, len);
    for (uint32_t n = 0; n < 256; n++) {
        zeros[0][n] = gf2_matrix_times(op, n);
        zeros[1][n] = gf2_matrix_times(op, n << 8);
        zeros[2][n] = gf2_matrix_times(op, n << 16);
        zeros[3][n] = gf2_matrix_times(op, n << 24);
    }
}

/* Apply a zero-append operator table to a raw register. */
static inline uint32_t crc32c_shift(uint32_t zeros[4][256], uint32_t crc)
{
    return zeros[0][crc & 0xff] ^ zeros[1][(crc >> 8) & 0xff] ^
           zeros[2][(crc >> 16) & 0xff] ^ zeros[3][crc >> 24];
}

/* ------------------------------------------------------------------------- */
/* Hardware paths                                                            */
/* ------------------------------------------------------------------------- */

/*
 * The interleaved loop, shared by both architectures. CRC64(c, word) and
 * CRC8(c, byte) are the instruction wrappers; `crc` is the raw register.
 * Input is first aligned to 8 bytes so the 64-bit loads are aligned.
 */
#define CRC32C_HW_BODY(CRC64, CRC8)                                            \
    uint64_t w0, w1, w2;                                                       \
    while (len && ((uintptr_t)p & 7) != 0) {                                   \
        crc = CRC8(crc, *p++);                                                 \
        len--;                                                                 \
    }                                                                          \
    while (len >= 3 * LONG_BLOCK) {                                            \
        uint64_t c1 = 0, c2 = 0, c0 = crc;                                     \
        const unsigned char *end = p + LONG_BLOCK;                             \
        do {                                                                   \
            memcpy(&w0, p, 8);                                                 \
            memcpy(&w1, p + LONG_BLOCK, 8);                                    \
            memcpy(&w2, p + 2 * LONG_BLOCK, 8);                                \
            c0 = CRC64(c0, w0);                                                \
            c1 = CRC64(c1, w1);                                                \
            c2 = CRC64(c2, w2);                                                \
            p += 8;                                                            \
        } while (p < end);                                                     \
        crc = crc32c_shift(crc_long, (uint32_t)c0) ^ (uint32_t)c1;             \
        crc = crc32c_shift(crc_long, crc) ^ (uint32_t)c2;                      \
        p += 2 * LONG_BLOCK;                                                   \
        len -= 3 * LONG_BLOCK;                                                 \
    }                                                                          \
    while (len >= 3 * SHORT_BLOCK) {                                           \
        uint64_t c1 = 0, c2 = 0, c0 = crc;                                     \
        const unsigned char *end = p + SHORT_BLOCK;                            \
        do {                                                                   \
            memcpy(&w0, p, 8);                                                 \
            memcpy(&w1, p + SHORT_BLOCK, 8);                                   \
            memcpy(&w2, p + 2 * SHORT_BLOCK, 8);                               \
            c0 = CRC64(c0, w0);                                                \
            c1 = CRC64(c1, w1);                                                \
            c2 = CRC64(c2, w2);                                                \
            p += 8;                                                            \
        } while (p < end);                                                     \
        crc = crc32c_shift(crc_short, (uint32_t)c0) ^ (uint32_t)c1;            \
        crc = crc32c_shift(crc_short, crc) ^ (uint32_t)c2;                     \
        p += 2 * SHORT_BLOCK;                                                  \
        len -= 3 * SHORT_BLOCK;                                                \
    }                                                                          \
    while (len >= 8) {                                                         \
        memcpy(&w0, p, 8);                                                     \
        crc = (uint32_t)CRC64(crc, w0);                                        \
        p += 8;                                                                \
        len -= 8;                                                              \
    }                                                                          \
    while (len) {                                                              \
        crc = CRC8(crc, *p++);                                                 \
        len--;                                                                 \
    }                                                                          \
    return crc;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_HW_X86 1
#include <cpuid.h>
#include <nmmintrin.h>

#define X86_CRC64(c, w) _mm_crc32_u64((c), (w))
#define X86_CRC8(c, b) _mm_crc32_u8((c), (b))

__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42_raw(uint32_t crc, const unsigned char *p, size_t len)
{
    CRC32C_HW_BODY(X86_CRC64, X86_CRC8)
}

static int cpu_has_sse42(void)
{
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return 0;
    return (ecx & bit_SSE4_2) != 0;
}
#endif

/*
 * arm_acle.h declares the CRC intrinsics under a target pragma (GCC >= 10,
 * clang), so they can be used in a target("+crc") function of a file built
 * without -march.
 */
#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
#define HAVE_HW_ARM 1
#include <arm_acle.h>
#include <asm/hwcap.h>
#include <sys/auxv.h>

#define ARM_CRC64(c, w) __crc32cd((uint32_t)(c), (w))
#define ARM_CRC8(c, b) __crc32cb((c), (b))

__attribute__((target("+crc")))
static uint32_t crc32c_armv8_raw(uint32_t crc, const unsigned char *p, size_t len)
{
    CRC32C_HW_BODY(ARM_CRC64, ARM_CRC8)
}

static int cpu_has_armv8_crc(void)
{
    return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
}
#endif

/* ------------------------------------------------------------------------- */
/* One-time initialisation and the public entry points                       */
/* ------------------------------------------------------------------------- */

static void crc32c_init(void)
{
    /* Byte-at-a-time table, then its 1..7 zero-byte extensions. */
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = crc_table[0][n];
        for (int k = 1; k < 8; k++) {
            c = crc_table[0][c & 0xff] ^ (c >> 8);
            crc_table[k][n] = c;
        }
    }
    crc32c_zeros(crc_long, LONG_BLOCK);
    crc32c_zeros(crc_short, SHORT_BLOCK);

    crc_impl = crc32c_table_raw;
    crc_backend = "table";

    const char *force = getenv("FASTKV_CRC32C");
    if (force != NULL && strcmp(force, "table") == 0)
        return;
#ifdef HAVE_HW_X86
    if (cpu_has_sse42()) {
        crc_impl = crc32c_sse42_raw;
        crc_backend = "sse4.2";
    }
#endif
#ifdef HAVE_HW_ARM
    if (cpu_has_armv8_crc()) {
        crc_impl = crc32c_armv8_raw;
        crc_backend = "armv8";
    }
#endif
}

uint32_t fastkv_crc32c(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc32c_init);
    return ~crc_impl(~crc, (const unsigned char *)buf, len);
}

uint32_t fastkv_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc32c_init);
    return ~crc32c_table_raw(~crc, (const unsigned char *)buf, len);
}

const char *fastkv_crc32c_backend(void)
{
    pthread_once(&crc_once, crc32c_init);
    return crc_backend;
}
