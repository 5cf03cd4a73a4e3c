# Little-endian loads and stores, independent of host byte order (shared by the
# WAL and peer frame codecs; inline, so they cost nothing across modules).
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef inline uint32_t ld32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] | (<uint32_t>p[1] << 8) |
            (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24))

cdef inline uint64_t ld64(const uint8_t *p) noexcept nogil:
    return <uint64_t>ld32(p) | (<uint64_t>ld32(p + 4) << 32)

cdef inline void st32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v & 0xff
    p[1] = (v >> 8) & 0xff
    p[2] = (v >> 16) & 0xff
    p[3] = (v >> 24) & 0xff

cdef inline void st64(uint8_t *p, uint64_t v) noexcept nogil:
    st32(p, <uint32_t>(v & 0xffffffffu))
    st32(p + 4, <uint32_t>(v >> 32))
