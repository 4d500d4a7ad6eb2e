/*
 * xpmem.h: XPMEM's C API, served by the userspace broker xpmemd instead of a kernel module.
 *
 * Programs written for the kernel module (UCX, Open MPI, MPICH) compile and link against this
 * header and libxpmem.so.0 unchanged. Every call returns -1 ((void *)-1 for xpmem_attach) with
 * errno set on failure; any thread may call any function at any time.
 *
 * Where this library differs from the kernel module:
 *  - xpmem_attach requires a page-aligned addr.offset and refuses any other with EINVAL, as the
 *    kernel module does; the size is rounded up to whole pages.
 *  - A window over exporter memory that cannot be shared (unmapped, PROT_NONE, code, shared
 *    mappings of other files, the kernel's [vdso]/[vvar]) is still attached; touching those pages
 *    raises SIGBUS.
 *  - Exported memory is moved into a shared memory file the first time a peer attaches it: from
 *    then on the exporter's pages are shmem pages (no transparent huge pages unless the system's
 *    shmem_enabled allows them).
 *  - Attachments are cached: xpmem_attach (vaddr NULL) of a window already attached through the
 *    same apid, offset and size returns the same address (detach once per attach), and a detached
 *    window may stay mapped for the next attach until the cache's bounds or memory pressure evict
 *    it (XPMEM_ATTACH_CACHE_ENTRIES=0 turns that off; see xpmem_attach_cache_stats below). Detach
 *    attachments with xpmem_detach, never munmap, while the cache is on.
 */
#ifndef XPMEM_H
#define XPMEM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A segment id from xpmem_make: positive; -1 means failure. */
typedef int64_t xpmem_segid_t;
/* An access permit from xpmem_get: positive; -1 means failure. Valid only in the process that got it. */
typedef int64_t xpmem_apid_t;

/* What xpmem_attach maps: `offset` bytes past the start of the segment `apid` was obtained for.
 * For a segment made with xpmem_make(0, XPMEM_MAXADDR_SIZE, ...) the offset is the exporter's
 * virtual address. It must be a multiple of the page size. */
struct xpmem_addr {
    xpmem_apid_t apid;
    off_t offset;
};

/* The size argument of xpmem_make that exports the whole address space. */
#define XPMEM_MAXADDR_SIZE ((size_t)-1)

/* xpmem_get flags. */
#define XPMEM_RDONLY 0x1
#define XPMEM_RDWR 0x2

/* permit_type of xpmem_make and xpmem_get: permit_value is a mode such as (void *)0600. */
#define XPMEM_PERMIT_MODE 0x1

/* Connects to the broker (starting one unless XPMEM_AUTOSTART=0). Called implicitly by every other
 * function; returns 0, or -1 with errno set. */
int xpmem_init(void);

/* A non-negative version when the library can reach a broker, else -1 (XPMEM_DEBUG=1 says why). */
int xpmem_version(void);

/* Exports [vaddr, vaddr + size): both page-aligned, or size XPMEM_MAXADDR_SIZE for everything from
 * vaddr up. permit_type is XPMEM_PERMIT_MODE and permit_value the mode bits (0600, 0666...). */
xpmem_segid_t xpmem_make(void *vaddr, size_t size, int permit_type, void *permit_value);

/* Withdraws a segment this process made; existing attachments keep their pages. */
int xpmem_remove(xpmem_segid_t segid);

/* Asks for access to a segment: flags XPMEM_RDONLY or XPMEM_RDWR, checked against the segment's
 * mode and this process's credentials. permit_type is XPMEM_PERMIT_MODE; permit_value is ignored. */
xpmem_apid_t xpmem_get(xpmem_segid_t segid, int flags, int permit_type, void *permit_value);

/* Gives up an access permit and unmaps every attachment made through it. */
int xpmem_release(xpmem_apid_t apid);

/* Maps `size` bytes (rounded up to pages) of the segment at addr.offset, anywhere when vaddr is NULL,
 * else exactly at vaddr (replacing what was there). Returns the address or (void *)-1. */
void *xpmem_attach(struct xpmem_addr addr, size_t size, void *vaddr);

/* Unmaps the attachment containing vaddr. */
int xpmem_detach(void *vaddr);

/* ---------------------------------------------------------------------------------------------
 * Extension of this library, NOT part of XPMEM's API: programs that call it do not build against
 * the kernel module's libxpmem. Test for it with XPMEM_HAVE_ATTACH_CACHE_STATS. */

#define XPMEM_HAVE_ATTACH_CACHE_STATS 1

/* The attachment cache: xpmem_attach (vaddr NULL) of a window already mapped through the same apid,
 * offset and size returns the same address and takes a reference; xpmem_detach drops one and leaves
 * the window mapped for the next attach, until the cache's bounds or memory pressure evict it. */
struct xpmem_attach_cache_stats {
    uint64_t hits;               /* attaches served from the cache */
    uint64_t misses;             /* attaches (vaddr NULL) it had no window for */
    uint64_t capacity_evictions; /* idle windows unmapped to stay within the bounds */
    uint64_t pressure_evictions; /* idle windows unmapped because the kernel reported memory pressure */
    uint64_t entries;            /* windows the cache holds mapped, in use or idle */
    uint64_t bytes;              /* their bytes */
    uint64_t idle_entries;       /* of those, windows the application has detached */
    uint64_t idle_bytes;
    uint64_t max_entries;        /* the bounds (XPMEM_ATTACH_CACHE_ENTRIES, XPMEM_ATTACH_CACHE_BYTES); */
    uint64_t max_bytes;          /* 0 when caching is off */
    uint64_t pressure_events;    /* times the memory pressure trigger fired */
    int32_t pressure_watch;      /* 1 watching memory pressure, 0 not started yet (no idle window so far),
                                  * -1 unavailable (no PSI) */
    int32_t reserved;
};

/* Fills *stats with this process's attachment cache counters, and sends them to the broker too (for
 * `xpmemctl clients`; the library also does so by itself at most once a second). Returns 0, or -1
 * with errno EINVAL (stats NULL). */
int xpmem_attach_cache_stats(struct xpmem_attach_cache_stats *stats);

/* ---------------------------------------------------------------------------------------------
 * Extension of this library, NOT part of XPMEM's API. Test for it with XPMEM_HAVE_HINT_FREE. */

#define XPMEM_HAVE_HINT_FREE 1

/* Says that this process's pages in [vaddr, vaddr + size) hold nothing it needs (freed buffers, an
 * allocator's free lists, a scratch area), so that the system may take them back under memory
 * pressure instead of keeping them. The guarantee is the kernel's free-page reporting's: the hint
 * covers only the bytes the pages held before the call. A page written after it, by this process or
 * by the kernel on its behalf (read(2) into it), keeps what was written; a page nobody wrote since may
 * read as zeros later, here and in peers that attach it afterwards.
 *
 * Taken for private anonymous memory (heap, stacks, anonymous mmaps) that no peer has attached: the
 * kernel's lazy free (MADV_FREE) keeps exactly that promise. Not taken for memory peers have
 * attached (it is shared with them by then: their writes cannot be watched, so no page of it is
 * known clean), for file mappings, or for this library's private area (its threads' stacks and
 * scratch buffers). Like MADV_FREE itself, it trusts the caller: hint only memory whose contents no
 * one needs. A heap range still holding live allocations (anyone's, this library's tables included,
 * which it allocates with malloc) must not be hinted.
 *
 * vaddr and size must be page-aligned; the range may span holes and mappings of every kind. Returns
 * the bytes the hint was taken for (0 when none), or -1 with errno EINVAL (NULL, unaligned, or a
 * range that wraps), or what listing the process's mappings failed with (then the hint may have been
 * taken for part of the range already). */
int64_t xpmem_hint_free(void *vaddr, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* XPMEM_H */
