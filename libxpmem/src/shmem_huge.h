/* Memory that had transparent huge pages keeps them when backing makes it shared.
 *
 * Private memory gets huge pages where the kernel's policy gives them (THP `always`, or a mapping
 * that asked with MADV_HUGEPAGE); shared memory, which backed memory becomes, only where the
 * administrator allows it (/sys/kernel/mm/transparent_hugepage/shmem_enabled: `advise` for mappings
 * that ask, `always`, `within_size`, `force`; most distributions ship `never`). Where both hold,
 * backing copies each huge page of the exporter's into a huge page of the address-space file and
 * has the exporter's new mapping ask for them, so the exporter's compute keeps its page size, as
 * under the kernel module, which never changes the exporter's pages. Memory with 4 KiB pages stays
 * so: backing never gives memory a page size it did not have. XPMEM_SHMEM_HUGE=0 turns it off. */
#ifndef XPMEM_SHMEM_HUGE_H
#define XPMEM_SHMEM_HUGE_H

#include <stdint.h>

/* The huge page size backing may use (a power of two), or 0 where it may not. Read once; call it
 * before stopping threads (it reads sysfs and the environment). */
uint64_t shmem_huge_page_size(void);

struct huge_range {
    uint64_t start, end;
};

/* Up to `capacity` ranges of [start, end) this process maps with huge pages, from the PAGEMAP_SCAN
 * ioctl on its /proc/self/pagemap descriptor `pagemap` (Linux 6.7 and later); 0 where the kernel
 * has no such ioctl. No allocation: safe while other threads are stopped. */
uint32_t huge_mapped_ranges(int pagemap, uint64_t start, uint64_t end, struct huge_range *ranges, uint32_t capacity);

#endif
