/* Memory that had transparent huge pages gets huge pages in the address-space file when backing
 * makes it shared.
 *
 * Private memory gets huge pages where the kernel's policy gives them (THP `always`, or a mapping
 * that asked with MADV_HUGEPAGE); shared memory, which backed memory becomes, only where the
 * administrator allows it (/sys/kernel/mm/transparent_hugepage/shmem_enabled, or the per-size
 * hugepages-2048kB/shmem_enabled: `advise` for mappings that ask, `always`, `within_size`, `force`;
 * most distributions ship `never`). Where both hold, backing copies each huge page of the
 * exporter's into a huge page of the file: one allocation instead of 512, and every later fault
 * (the exporter's, an importer's) maps the whole huge page at once. The exporter's new mapping does
 * not ask for huge pages itself (the pieces of one buffer backed by different requests must stay
 * one mapping), so it maps them with 4 KiB entries. Memory with 4 KiB pages is copied into 4 KiB
 * pages under `advise`; under `always` or `within_size` the kernel gives the file huge pages
 * wherever it writes, whatever was there. XPMEM_SHMEM_HUGE=0 turns the copy into huge pages off. */
#ifndef XPMEM_SHMEM_HUGE_H
#define XPMEM_SHMEM_HUGE_H

#include <stdint.h>

/* The huge page size backing may use (a power of two no larger than a backing chunk), or 0 where it
 * may not (not allowed, no PAGEMAP_SCAN before Linux 6.7, turned off). Read once; call it before
 * stopping threads (it reads sysfs and the environment). */
uint64_t shmem_huge_page_size(void);

struct huge_range {
    uint64_t start, end;
};

/* Up to `capacity` ranges of [start, end) this process maps with huge pages, from the PAGEMAP_SCAN
 * ioctl on its /proc/self/pagemap descriptor `pagemap`; 0 where the kernel has no such ioctl. No
 * allocation: safe while other threads are stopped. */
uint32_t huge_mapped_ranges(int pagemap, uint64_t start, uint64_t end, struct huge_range *ranges, uint32_t capacity);

#endif
