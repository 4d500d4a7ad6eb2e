/* Page arithmetic and the extent of the address space a process can export. */
#ifndef XPMEM_PAGES_H
#define XPMEM_PAGES_H

#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

/* The address-space file is this long: offset == virtual address for every user address of a
 * 4-level page table (the kernel hands out addresses above it only to callers that ask). */
#define ADDRESS_SPACE_LIMIT (UINT64_C(1) << 47)

static inline uint64_t page_size(void)
{
    static uint64_t cached;
    if (cached == 0)
        cached = (uint64_t)sysconf(_SC_PAGESIZE);
    return cached;
}

static inline bool is_page_aligned(uint64_t value) { return (value & (page_size() - 1)) == 0; }
static inline uint64_t page_round_down(uint64_t value) { return value & ~(page_size() - 1); }

#endif
