/*
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) for fastkv.
 *
 * The checksum is the standard one (iSCSI, ext4, etcd's WAL):
 * fastkv_crc32c(0, "123456789", 9) == 0xE3069283. The pre- and post-inversion
 * are done inside, so results chain:
 *     fastkv_crc32c(fastkv_crc32c(0, a, la), b, lb) == fastkv_crc32c(0, a||b, la+lb)
 *
 * The implementation is chosen once, at first use: the SSE4.2 crc32
 * instruction on x86_64, the ARMv8 CRC32 instructions on aarch64, else a
 * slicing-by-8 table. FASTKV_CRC32C=table in the environment forces the table.
 * All functions are thread-safe and may be called without the GIL.
 */
#ifndef FASTKV_CRC32C_IMPL_H
#define FASTKV_CRC32C_IMPL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CRC-32C of buf[0:len], continuing from the checksum `crc` (0 to start). */
uint32_t fastkv_crc32c(uint32_t crc, const void *buf, size_t len);

/* The same, always through the portable table (slicing-by-8) path. */
uint32_t fastkv_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* "sse4.2", "armv8" or "table": the path fastkv_crc32c uses. */
const char *fastkv_crc32c_backend(void);

#ifdef __cplusplus
}
#endif

#endif /* FASTKV_CRC32C_IMPL_H */
