#include "attach_cache.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attach_cache_report.h"
#include "attachment_unmap.h"
#include "attachments.h"
#include "debug_log.h"
#include "memory_pressure.h"

/* Defaults for MPI jobs. Entries: a rank of a 128-rank node attaching ~32 buffers per peer; each
 * window is at least one of the process's vm.max_map_count (65530 by default) mappings, and 4096
 * leaves most of them to the application. Bytes: a quarter of physical memory. A cached window
 * costs no memory of its own (its pages are the exporter's), but its page tables (8 bytes per
 * touched 4 KiB page) and the VMAs do; a quarter keeps those under 0.05% of memory. */
#define DEFAULT_MAX_ENTRIES 4096ULL
#define DEFAULT_MEMORY_SHARE 4ULL

static pthread_mutex_t bounds_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic bool bounds_read;
static uint64_t max_entries, max_bytes;

static _Atomic uint64_t hits, misses, capacity_evictions, pressure_evictions;

/* A count or a size: digits, optionally followed by K, M, G or T (powers of 1024). */
static bool parse_amount(const char *text, uint64_t *value)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)text[0]))
        return false;
    unsigned long long number = strtoull(text, &end, 10);
    if (errno != 0)
        return false;
    unsigned shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    case 'T': shift = 40; end++; break;
    default: break;
    }
    if (*end != '\0' || (shift != 0 && number > (UINT64_MAX >> shift)))
        return false;
    *value = (uint64_t)number << shift;
    return true;
}

/* The variable's value, or `fallback` when unset; a value that is not an amount is said on stderr
 * (a misconfigured job should not guess silently) and the fallback is used. */
static uint64_t amount_from_environment(const char *name, uint64_t fallback)
{
    const char *text = getenv(name);
    uint64_t value;
    if (text == NULL || text[0] == '\0')
        return fallback;
    if (parse_amount(text, &value))
        return value;
    char line[256];
    int length = snprintf(line, sizeof line,
                          "libxpmem: %s='%.64s' is not a number (digits, optionally K, M, G or T); using %llu\n", name,
                          text, (unsigned long long)fallback);
    if (length > 0) {
        ssize_t ignored = write(STDERR_FILENO, line, (size_t)length < sizeof line ? (size_t)length : sizeof line - 1);
        (void)ignored;
    }
    return fallback;
}

static void read_bounds(void)
{
    if (bounds_read)
        return;
    pthread_mutex_lock(&bounds_lock);
    if (!bounds_read) {
        long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        uint64_t memory = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 1ULL << 32;
        max_entries = amount_from_environment("XPMEM_ATTACH_CACHE_ENTRIES", DEFAULT_MAX_ENTRIES);
        max_bytes = amount_from_environment("XPMEM_ATTACH_CACHE_BYTES", memory / DEFAULT_MEMORY_SHARE);
        const char *all_caches = getenv("XPMEM_ATTACH_CACHE");
        if (max_entries == 0 || max_bytes == 0 || (all_caches != NULL && strcmp(all_caches, "0") == 0))
            max_entries = max_bytes = 0;
        debug_log("attachment cache: %llu windows, %llu bytes at most%s", (unsigned long long)max_entries,
                  (unsigned long long)max_bytes, max_entries == 0 ? " (off)" : "");
        bounds_read = true;
    }
    pthread_mutex_unlock(&bounds_lock);
}

bool attach_cache_enabled(void)
{
    read_bounds();
    return max_entries != 0;
}

/* Tells the broker the counters, when due (attach_cache_report.h). */
static void report(bool now)
{
    struct xpmem_attach_cache_stats stats;
    attach_cache_stats(&stats);
    attach_cache_report(&stats, now);
}

void *attach_cache_lookup(uint64_t apid, uint64_t segment_offset, size_t length)
{
    if (!attach_cache_enabled())
        return NULL;
    uintptr_t address;
    if (attachments_hold_cached(apid, segment_offset, length, &address)) {
        hits++;
        if (attach_cache_report_hit_due())
            report(false);
        return (void *)address;
    }
    misses++;
    return NULL;
}

static bool over_bounds(void)
{
    struct attachment_totals totals = attachments_totals();
    return totals.cached_entries > max_entries || totals.cached_bytes > max_bytes;
}

void attach_cache_trim(void)
{
    if (!attach_cache_enabled())
        return;
    struct attachment coldest;
    /* Held windows count against the bounds too; when they alone exceed them, every idle one goes
     * and the held ones stay. */
    while (over_bounds() && attachments_take_coldest_idle(&coldest)) {
        attachment_unmap(&coldest);
        capacity_evictions++;
    }
    /* After a miss (a new window) or evictions: work that costs far more than a report's check. */
    report(false);
}

/* The memory pressure thread: gives back idle windows in proportion to how long tasks stalled on
 * memory over the last ten seconds (avg10, in percent), at least one per event. */
static void evict_for_pressure(double some_avg10)
{
    struct attachment_totals totals = attachments_totals();
    /* In thousandths, rounded up (no libm: the library needs only libc). */
    size_t thousandths = some_avg10 <= 0 ? 0 : some_avg10 >= 100 ? 1000 : (size_t)(some_avg10 * 10);
    size_t count = (totals.idle_entries * thousandths + 999) / 1000;
    if (count == 0)
        count = 1;
    size_t evicted = 0;
    struct attachment coldest;
    while (evicted < count && attachments_take_coldest_idle(&coldest)) {
        attachment_unmap(&coldest);
        evicted++;
    }
    pressure_evictions += evicted;
    debug_log("memory pressure (some avg10=%.2f): %zu of %zu idle cached window(s) unmapped", some_avg10, evicted,
              totals.idle_entries);
    report(false);
}

int attach_cache_detach(uintptr_t address)
{
    struct attachment taken;
    switch (attachments_release_containing(address, attach_cache_enabled(), &taken)) {
    case ATTACHMENT_NOT_HELD:
        errno = EINVAL;
        return -1;
    case ATTACHMENT_TAKEN:
        attachment_unmap(&taken);
        return 0;
    case ATTACHMENT_IDLE:
        /* Only now is there something pressure could take: the watch costs nothing before. */
        memory_pressure_watch(evict_for_pressure);
        attach_cache_trim();
        return 0;
    case ATTACHMENT_STILL_HELD:
        return 0;
    }
    return 0;
}

void attach_cache_purge_stale(void)
{
    struct attachment stale;
    while (attachments_take_stale_idle(&stale))
        attachment_unmap(&stale);
}

void attach_cache_stats(struct xpmem_attach_cache_stats *stats)
{
    read_bounds();
    struct attachment_totals totals = attachments_totals();
    *stats = (struct xpmem_attach_cache_stats){
        .hits = hits,
        .misses = misses,
        .capacity_evictions = capacity_evictions,
        .pressure_evictions = pressure_evictions,
        .entries = totals.cached_entries,
        .bytes = totals.cached_bytes,
        .idle_entries = totals.idle_entries,
        .idle_bytes = totals.idle_bytes,
        .max_entries = max_entries,
        .max_bytes = max_bytes,
        .pressure_events = memory_pressure_events(),
        .pressure_watch = (int32_t)memory_pressure_state(),
    };
}

void attach_cache_reset_after_fork(void)
{
    pthread_mutex_init(&bounds_lock, NULL);
    bounds_read = false;
    hits = misses = capacity_evictions = pressure_evictions = 0;
    attach_cache_report_reset_after_fork();
}
