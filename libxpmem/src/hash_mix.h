/* A 64-bit value's bits spread over all 64 (the finaliser of splitmix64): for hash buckets of
 * page-aligned offsets and for priorities that behave as if random. */
#ifndef XPMEM_HASH_MIX_H
#define XPMEM_HASH_MIX_H

#include <stdint.h>

static inline uint64_t hash_mix(uint64_t value)
{
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ULL;
    value = (value ^ (value >> 27)) * 0x94D049BB133111EBULL;
    return value ^ (value >> 31);
}

#endif
