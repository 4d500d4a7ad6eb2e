/* The attachment cache (src/attach_cache.h) with a real broker and real processes: an exporter
 * serves a buffer of WINDOWS windows, each importer is forked before any library use with the
 * cache's environment of its test, checks what it sees (addresses, the exporter's bytes, whether a
 * window is still mapped, the library's counters) and says "ok" or what went wrong. The memory
 * pressure test runs an importer in a memory cgroup of its own (cgroup v2 memory.high where the
 * machine has the v2 memory controller, else v1 memory.limit_in_bytes) and needs root. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup_path.h"
#include "harness.h"
#include "test_report.h"
#include "xpmem.h"

#define PAGE 4096UL
#define LINE 4096
#define STEP_TIMEOUT_MS 20000
/* The exporter's buffer: WINDOWS windows of WINDOW_PAGES pages each. */
#define WINDOWS 64
#define WINDOW_PAGES 4
#define WINDOW_BYTES (WINDOW_PAGES * PAGE)

static struct broker broker;
/* The exporter's segment, for tests that take no argument for it. */
static xpmem_segid_t reporting_segid;

/* ---------------------------------------------------------------------------------------------
 * The exporter: one buffer, its own segment (offsets from its base), filled with pattern 1. */

static int exporter(int in, int out, void *argument)
{
    (void)argument;
    size_t size = WINDOWS * WINDOW_BYTES;
    uint8_t *buffer = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pattern_fill(buffer, size, 1);
    xpmem_segid_t segid = xpmem_make(buffer, size, XPMEM_PERMIT_MODE, (void *)0600);
    if (segid < 0) {
        say(out, "error make %s", strerror(errno));
        return 2;
    }
    say(out, "ready %lld", (long long)segid);
    char line[LINE];
    hear(in, line, sizeof line); /* "quit", or the end of the pipe */
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * What importers share: a running list of what went wrong, and small checks. */

struct verdict {
    char text[LINE];
    size_t used;
};

__attribute__((format(printf, 2, 3))) static void wrong(struct verdict *verdict, const char *format, ...)
{
    if (verdict->used >= sizeof verdict->text - 1)
        return;
    va_list arguments;
    va_start(arguments, format);
    int length = vsnprintf(verdict->text + verdict->used, sizeof verdict->text - verdict->used, format, arguments);
    va_end(arguments);
    if (length > 0)
        verdict->used += (size_t)length;
    if (verdict->used < sizeof verdict->text - 2) {
        verdict->text[verdict->used++] = ';';
        verdict->text[verdict->used++] = ' ';
        verdict->text[verdict->used] = '\0';
    }
}

static int conclude(int out, const struct verdict *verdict)
{
    say(out, "%s", verdict->used == 0 ? "ok" : verdict->text);
    return 0;
}

struct importer_setup {
    xpmem_segid_t segid;
    const char *entries; /* XPMEM_ATTACH_CACHE_ENTRIES, or NULL to leave it unset */
};

static void apply_environment(const struct importer_setup *setup)
{
    if (setup->entries != NULL)
        setenv("XPMEM_ATTACH_CACHE_ENTRIES", setup->entries, 1);
    else
        unsetenv("XPMEM_ATTACH_CACHE_ENTRIES");
    unsetenv("XPMEM_ATTACH_CACHE_BYTES");
}

static uint8_t *attach_window(xpmem_apid_t apid, int window, void *vaddr)
{
    struct xpmem_addr where = {.apid = apid, .offset = (off_t)(window * WINDOW_BYTES)};
    uint8_t *mapped = xpmem_attach(where, WINDOW_BYTES, vaddr);
    return mapped == (void *)-1 ? NULL : mapped;
}

/* Whether the window at `address` reads the exporter's bytes of window `window`. */
static bool reads_window(const volatile uint8_t *address, int window)
{
    for (size_t index = 0; index < WINDOW_BYTES; index += 64)
        if (address[index] != pattern_byte(window * WINDOW_BYTES + index, 1))
            return false;
    return true;
}

/* Whether any page of [address, + WINDOW_BYTES) is mapped in this process (msync says ENOMEM for
 * unmapped memory). */
static bool mapped(const void *address)
{
    return msync((void *)address, WINDOW_BYTES, MS_ASYNC) == 0;
}

static struct xpmem_attach_cache_stats stats_now(void)
{
    struct xpmem_attach_cache_stats stats;
    memset(&stats, 0xFF, sizeof stats);
    xpmem_attach_cache_stats(&stats);
    return stats;
}

/* Runs `body` as an importer with `entries` as XPMEM_ATTACH_CACHE_ENTRIES (NULL: the default) and
 * reports `name` from its answer. */
static void run_importer(const char *name, xpmem_segid_t segid, const char *entries,
                         int (*body)(int in, int out, void *argument))
{
    struct importer_setup setup = {.segid = segid, .entries = entries};
    struct child importing;
    char line[LINE] = "";
    if (child_start(&importing, body, &setup) < 0) {
        report(name, false, "fork");
        return;
    }
    bool answered = child_read_line(&importing, line, sizeof line, STEP_TIMEOUT_MS);
    int status = child_wait(&importing, STEP_TIMEOUT_MS);
    report(name, answered && strcmp(line, "ok") == 0 && status == 0, "%s (exit %d)", answered ? line : "no answer",
           status);
}

/* ---------------------------------------------------------------------------------------------
 * The importers, one per test. */

static int hit_returns_the_same_address(int in, int out, void *argument)
{
    (void)in;
    const struct importer_setup *setup = argument;
    apply_environment(setup);
    struct verdict verdict = {0};
    xpmem_apid_t apid = xpmem_get(setup->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    uint8_t *first = attach_window(apid, 3, NULL);
    uint8_t *second = attach_window(apid, 3, NULL);
    struct xpmem_attach_cache_stats stats = stats_now();
    if (first == NULL || second != first)
        wrong(&verdict, "attached at %p then %p", (void *)first, (void *)second);
    if (stats.hits != 1 || stats.misses != 1 || stats.entries != 1 || stats.idle_entries != 0)
        wrong(&verdict, "hits %llu misses %llu entries %llu idle %llu", (unsigned long long)stats.hits,
              (unsigned long long)stats.misses, (unsigned long long)stats.entries,
              (unsigned long long)stats.idle_entries);
    if (first != NULL && !reads_window(first, 3))
        wrong(&verdict, "the window does not read the exporter's bytes");
    /* Two attaches, two detaches: the window stays mapped, idle; a third detach is EINVAL. */
    if (xpmem_detach(first) != 0 || xpmem_detach(first) != 0)
        wrong(&verdict, "detach of a held window failed: %s", strerror(errno));
    errno = 0;
    if (xpmem_detach(first) != -1 || errno != EINVAL)
        wrong(&verdict, "a detach beyond the attaches was not EINVAL (errno %s)", strerror(errno));
    stats = stats_now();
    if (first != NULL && !mapped(first))
        wrong(&verdict, "the detached window was unmapped, not cached");
    if (stats.entries != 1 || stats.idle_entries != 1 || stats.idle_bytes != WINDOW_BYTES)
        wrong(&verdict, "after detach: entries %llu idle %llu idle bytes %llu", (unsigned long long)stats.entries,
              (unsigned long long)stats.idle_entries, (unsigned long long)stats.idle_bytes);
    if (stats.max_entries != 4096 || stats.max_bytes == 0)
        wrong(&verdict, "default bounds %llu windows %llu bytes", (unsigned long long)stats.max_entries,
              (unsigned long long)stats.max_bytes);
    return conclude(out, &verdict);
}

static int detach_then_attach_hits(int in, int out, void *argument)
{
    (void)in;
    const struct importer_setup *setup = argument;
    apply_environment(setup);
    struct verdict verdict = {0};
    xpmem_apid_t apid = xpmem_get(setup->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    uint8_t *first = attach_window(apid, 5, NULL);
    if (first == NULL || xpmem_detach(first) != 0)
        wrong(&verdict, "attach and detach failed: %s", strerror(errno));
    uint8_t *again = attach_window(apid, 5, NULL);
    struct xpmem_attach_cache_stats stats = stats_now();
    if (again != first)
        wrong(&verdict, "attached again at %p, first at %p", (void *)again, (void *)first);
    if (stats.hits != 1 || stats.misses != 1 || stats.idle_entries != 0)
        wrong(&verdict, "hits %llu misses %llu idle %llu", (unsigned long long)stats.hits,
              (unsigned long long)stats.misses, (unsigned long long)stats.idle_entries);
    if (again != NULL && !reads_window(again, 5))
        wrong(&verdict, "the window served from the cache does not read the exporter's bytes");
    /* Writes through it still reach the exporter's memory: read back through a second, uncached
     * mapping of the same window (at a fixed address). */
    if (again != NULL) {
        again[10] = 0xA5;
        uint8_t *reserved = mmap(NULL, WINDOW_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        uint8_t *second = attach_window(apid, 5, reserved);
        if (second == NULL || second == again || second[10] != 0xA5)
            wrong(&verdict, "a write through the cached window is not seen through another mapping");
    }
    return conclude(out, &verdict);
}

/* XPMEM_ATTACH_CACHE_ENTRIES=3: window 0 held throughout, 1 and 2 idle, 1 used again (so 2 is the
 * coldest), then window 3 attached: 4 windows > 3, so 2 goes, and only 2. Then 5 held windows (over
 * the bound alone): none of them goes. */
static int bound_evicts_the_coldest_idle(int in, int out, void *argument)
{
    (void)in;
    const struct importer_setup *setup = argument;
    apply_environment(setup);
    struct verdict verdict = {0};
    xpmem_apid_t apid = xpmem_get(setup->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    uint8_t *held = attach_window(apid, 0, NULL);
    uint8_t *one = attach_window(apid, 1, NULL);
    uint8_t *two = attach_window(apid, 2, NULL);
    xpmem_detach(one);
    xpmem_detach(two);
    if (attach_window(apid, 1, NULL) != one)
        wrong(&verdict, "window 1 was not a hit");
    xpmem_detach(one);
    uint8_t *three = attach_window(apid, 3, NULL);
    struct xpmem_attach_cache_stats stats = stats_now();
    if (held == NULL || one == NULL || two == NULL || three == NULL)
        wrong(&verdict, "an attach failed");
    if (stats.capacity_evictions != 1 || stats.entries != 3)
        wrong(&verdict, "capacity evictions %llu entries %llu (expected 1, 3)",
              (unsigned long long)stats.capacity_evictions, (unsigned long long)stats.entries);
    if (two != NULL && mapped(two))
        wrong(&verdict, "the coldest idle window (2) is still mapped");
    if (one != NULL && !mapped(one))
        wrong(&verdict, "the warmer idle window (1) was unmapped");
    if (held != NULL && !reads_window(held, 0))
        wrong(&verdict, "the held window lost the exporter's bytes");
    if (attach_window(apid, 1, NULL) != one)
        wrong(&verdict, "window 1 is no longer a hit");
    unsigned long long misses = stats_now().misses;
    attach_window(apid, 2, NULL);
    if (stats_now().misses != misses + 1)
        wrong(&verdict, "window 2 was served although evicted");

    /* Held windows alone over the bound: every one stays. */
    uint8_t *extra[5];
    for (int index = 0; index < 5; index++)
        extra[index] = attach_window(apid, 10 + index, NULL);
    stats = stats_now();
    for (int index = 0; index < 5; index++)
        if (extra[index] == NULL || !reads_window(extra[index], 10 + index))
            wrong(&verdict, "held window %d lost", 10 + index);
    if (held != NULL && !reads_window(held, 0))
        wrong(&verdict, "the first held window lost the exporter's bytes");
    if (stats.idle_entries != 0)
        wrong(&verdict, "%llu idle windows left over the bound", (unsigned long long)stats.idle_entries);
    return conclude(out, &verdict);
}

static int release_unmaps_cached_windows(int in, int out, void *argument)
{
    (void)in;
    const struct importer_setup *setup = argument;
    apply_environment(setup);
    struct verdict verdict = {0};
    xpmem_apid_t apid = xpmem_get(setup->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    xpmem_apid_t other = xpmem_get(setup->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    uint8_t *idle_one = attach_window(apid, 1, NULL), *idle_two = attach_window(apid, 2, NULL);
    uint8_t *held = attach_window(apid, 3, NULL);
    uint8_t *others = attach_window(other, 4, NULL);
    xpmem_detach(idle_one);
    xpmem_detach(idle_two);
    xpmem_detach(others);
    if (idle_one == NULL || idle_two == NULL || held == NULL || others == NULL)
        wrong(&verdict, "an attach failed");
    if (xpmem_release(apid) != 0)
        wrong(&verdict, "release failed: %s", strerror(errno));
    if ((idle_one != NULL && mapped(idle_one)) || (idle_two != NULL && mapped(idle_two)))
        wrong(&verdict, "a cached window of the released permit is still mapped");
    if (held != NULL && mapped(held))
        wrong(&verdict, "the held window of the released permit is still mapped");
    struct xpmem_attach_cache_stats stats = stats_now();
    if (stats.entries != 1 || stats.idle_entries != 1)
        wrong(&verdict, "entries %llu idle %llu (expected the other permit's one)", (unsigned long long)stats.entries,
              (unsigned long long)stats.idle_entries);
    if (others != NULL && (!mapped(others) || attach_window(other, 4, NULL) != others))
        wrong(&verdict, "the other permit's cached window went too");
    errno = 0;
    if (attach_window(apid, 1, NULL) != NULL || errno != EINVAL)
        wrong(&verdict, "attach through the released permit was not EINVAL");
    return conclude(out, &verdict);
}

static int fixed_address_is_never_served_from_the_cache(int in, int out, void *argument)
{
    (void)in;
    const struct importer_setup *setup = argument;
    apply_environment(setup);
    struct verdict verdict = {0};
    xpmem_apid_t apid = xpmem_get(setup->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    uint8_t *cached = attach_window(apid, 7, NULL);
    xpmem_detach(cached);
    uint8_t *reserved = mmap(NULL, WINDOW_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *fixed = attach_window(apid, 7, reserved);
    struct xpmem_attach_cache_stats stats = stats_now();
    if (cached == NULL || fixed != reserved)
        wrong(&verdict, "the fixed attach returned %p, asked for %p (cached one at %p)", (void *)fixed,
              (void *)reserved, (void *)cached);
    if (stats.hits != 0)
        wrong(&verdict, "the fixed attach counted as a hit");
    if (fixed != NULL && !reads_window(fixed, 7))
        wrong(&verdict, "the fixed window does not read the exporter's bytes");
    /* A fixed window is never cached: detach unmaps it (nothing else may be handed this address). */
    if (fixed != NULL && (xpmem_detach(fixed) != 0 || mapped(fixed)))
        wrong(&verdict, "detach of the fixed window left it mapped");
    if (stats_now().entries != 1)
        wrong(&verdict, "the fixed window was counted in the cache");
    /* The cached one is untouched, and still served to a NULL attach. */
    if (cached != NULL && attach_window(apid, 7, NULL) != cached)
        wrong(&verdict, "the cached window was not served after the fixed one");
    return conclude(out, &verdict);
}

static int entries_zero_turns_caching_off(int in, int out, void *argument)
{
    (void)in;
    const struct importer_setup *setup = argument;
    apply_environment(setup);
    struct verdict verdict = {0};
    xpmem_apid_t apid = xpmem_get(setup->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    uint8_t *first = attach_window(apid, 9, NULL);
    uint8_t *second = attach_window(apid, 9, NULL);
    if (first == NULL || second == NULL || first == second)
        wrong(&verdict, "two attaches returned %p and %p (expected two mappings)", (void *)first, (void *)second);
    xpmem_detach(first);
    if (first != NULL && mapped(first))
        wrong(&verdict, "the detached window stayed mapped");
    errno = 0;
    if (xpmem_detach(first) != -1 || errno != EINVAL)
        wrong(&verdict, "a second detach was not EINVAL");
    struct xpmem_attach_cache_stats stats = stats_now();
    if (stats.hits != 0 || stats.entries != 0 || stats.max_entries != 0 || stats.max_bytes != 0)
        wrong(&verdict, "hits %llu entries %llu bounds %llu/%llu", (unsigned long long)stats.hits,
              (unsigned long long)stats.entries, (unsigned long long)stats.max_entries,
              (unsigned long long)stats.max_bytes);
    if (second != NULL && !reads_window(second, 9))
        wrong(&verdict, "the second window does not read the exporter's bytes");
    return conclude(out, &verdict);
}

/* A value that is not a number is said on stderr, and the default is used. */
static int a_bad_bound_is_said(int in, int out, void *argument)
{
    (void)in;
    const struct importer_setup *setup = argument;
    apply_environment(setup);
    struct verdict verdict = {0};
    char path[] = "/tmp/xpmem-cache-stderr-XXXXXX";
    int captured = mkstemp(path);
    unlink(path);
    int saved = dup(STDERR_FILENO);
    dup2(captured, STDERR_FILENO);
    struct xpmem_attach_cache_stats stats = stats_now();
    dup2(saved, STDERR_FILENO);
    char text[1024] = "";
    ssize_t length = pread(captured, text, sizeof text - 1, 0);
    text[length > 0 ? length : 0] = '\0';
    if (strstr(text, "XPMEM_ATTACH_CACHE_ENTRIES='twelve' is not a number") == NULL)
        wrong(&verdict, "stderr said '%s'", text);
    if (stats.max_entries != 4096)
        wrong(&verdict, "bound %llu instead of the default", (unsigned long long)stats.max_entries);
    errno = 0;
    if (xpmem_attach_cache_stats(NULL) != -1 || errno != EINVAL)
        wrong(&verdict, "stats into NULL was not EINVAL");
    return conclude(out, &verdict);
}

/* Four threads attach and detach overlapping sets of windows; afterwards every window is idle
 * (no reference lost or doubled), each attach read the right bytes, and hits happened. */
struct thread_work {
    xpmem_apid_t apid;
    int first;
    atomic_int *failures;
};

static void *attach_and_detach(void *argument)
{
    struct thread_work *work = argument;
    for (int round = 0; round < 300; round++) {
        int window = work->first + round % 8;
        uint8_t *address = attach_window(work->apid, window, NULL);
        if (address == NULL || !reads_window(address, window) || xpmem_detach(address) != 0)
            atomic_fetch_add(work->failures, 1);
    }
    return NULL;
}

static int threads_share_the_cache(int in, int out, void *argument)
{
    (void)in;
    const struct importer_setup *setup = argument;
    apply_environment(setup);
    struct verdict verdict = {0};
    xpmem_apid_t apid = xpmem_get(setup->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    atomic_int failures = 0;
    pthread_t threads[4];
    struct thread_work work[4];
    for (int index = 0; index < 4; index++) {
        work[index] = (struct thread_work){.apid = apid, .first = index * 4, .failures = &failures};
        pthread_create(&threads[index], NULL, attach_and_detach, &work[index]);
    }
    for (int index = 0; index < 4; index++)
        pthread_join(threads[index], NULL);
    struct xpmem_attach_cache_stats stats = stats_now();
    if (atomic_load(&failures) != 0)
        wrong(&verdict, "%d attach/read/detach failures", atomic_load(&failures));
    if (stats.entries != stats.idle_entries || stats.entries > 6)
        wrong(&verdict, "entries %llu idle %llu (bound 6)", (unsigned long long)stats.entries,
              (unsigned long long)stats.idle_entries);
    if (stats.hits + stats.misses != 1200 || stats.hits == 0)
        wrong(&verdict, "hits %llu + misses %llu != 1200 attaches", (unsigned long long)stats.hits,
              (unsigned long long)stats.misses);
    return conclude(out, &verdict);
}

/* A fork child starts with an empty cache of its own; the parent's idle windows are not the
 * child's, and the parent keeps its own. */
static int fork_child_starts_empty(int in, int out, void *argument)
{
    (void)in;
    const struct importer_setup *setup = argument;
    apply_environment(setup);
    struct verdict verdict = {0};
    xpmem_apid_t apid = xpmem_get(setup->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    uint8_t *idle = attach_window(apid, 11, NULL);
    xpmem_detach(idle);
    pid_t child = fork();
    if (child == 0) {
        struct xpmem_attach_cache_stats stats = stats_now();
        bool empty = stats.entries == 0 && stats.hits == 0 && stats.misses == 0;
        bool unmapped = idle == NULL || !mapped(idle);
        _exit(empty && unmapped ? 0 : 1);
    }
    int status = -1;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        wrong(&verdict, "the child's cache was not empty, or the parent's idle window stayed mapped in it");
    if (attach_window(apid, 11, NULL) != idle || stats_now().hits != 1)
        wrong(&verdict, "the parent lost its cached window (hits %llu)", (unsigned long long)stats_now().hits);
    return conclude(out, &verdict);
}

/* ---------------------------------------------------------------------------------------------
 * Following the exporter: it unmaps a window's memory and maps new memory there. Windows follow
 * (their faults ask for the exporter's current pages: README, "Following the exporter"), read-write
 * and read-only alike, so cached ones may be served again, and read the new bytes. */

#define REMAP_PAGES 16

static int remapping_exporter(int in, int out, void *argument)
{
    (void)argument;
    uint8_t *buffer = mmap(NULL, REMAP_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pattern_fill(buffer, REMAP_PAGES * PAGE, 1);
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    say(out, "ready %lld %lu", (long long)segid, (unsigned long)(uintptr_t)buffer);
    char line[LINE];
    while (hear(in, line, sizeof line) && strcmp(line, "remap") == 0) {
        munmap(buffer, REMAP_PAGES * PAGE);
        uint8_t *again = mmap(buffer, REMAP_PAGES * PAGE, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        pattern_fill(again, REMAP_PAGES * PAGE, 2);
        say(out, again == buffer ? "remapped" : "remap failed");
    }
    return 0;
}

struct remap_setup {
    xpmem_segid_t segid;
    uintptr_t address;
};

/* Attaches the window through `apid`, checks it reads `seed`, and says where it is (NULL if not). */
static uint8_t *attach_and_check(xpmem_apid_t apid, uintptr_t address, unsigned seed, struct verdict *verdict,
                                 const char *what)
{
    struct xpmem_addr where = {.apid = apid, .offset = (off_t)address};
    uint8_t *window = xpmem_attach(where, REMAP_PAGES * PAGE, NULL);
    if (window == (void *)-1) {
        wrong(verdict, "%s: attach failed: %s", what, strerror(errno));
        return NULL;
    }
    long bad = pattern_check(window, REMAP_PAGES * PAGE, seed);
    if (bad >= 0)
        wrong(verdict, "%s does not read the exporter's bytes (seed %u) at %ld", what, seed, bad);
    return window;
}

static int remap_follower(int in, int out, void *argument)
{
    const struct remap_setup *setup = argument;
    unsetenv("XPMEM_ATTACH_CACHE_ENTRIES");
    struct verdict verdict = {0};
    xpmem_apid_t writable = xpmem_get(setup->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    xpmem_apid_t read_only = xpmem_get(setup->segid, XPMEM_RDONLY, XPMEM_PERMIT_MODE, NULL);
    uint8_t *first = attach_and_check(writable, setup->address, 1, &verdict, "the read-write window");
    uint8_t *read_first = attach_and_check(read_only, setup->address, 1, &verdict, "the read-only window");
    xpmem_detach(first);
    xpmem_detach(read_first);
    struct xpmem_attach_cache_stats stats = stats_now();
    if (stats.idle_entries != 2)
        wrong(&verdict, "after detach: %llu idle cached windows (expected both)", (unsigned long long)stats.idle_entries);
    say(out, "cached");
    char line[LINE];
    if (!hear(in, line, sizeof line) || strcmp(line, "attach again") != 0)
        return 2;
    uint8_t *again = attach_and_check(writable, setup->address, 2, &verdict, "the cached read-write window");
    uint8_t *read_again = attach_and_check(read_only, setup->address, 2, &verdict, "the cached read-only window");
    stats = stats_now();
    if (again != first || read_again != read_first || stats.hits != 2)
        wrong(&verdict, "not served from the cache: %p (first %p), %p (first %p), hits %llu", (void *)again,
              (void *)first, (void *)read_again, (void *)read_first, (unsigned long long)stats.hits);
    return conclude(out, &verdict);
}

static void test_cached_windows_follow_the_exporter(void)
{
    const char *name = "after the exporter unmaps and maps new memory under cached windows, attaching them again "
                       "serves them, and they read the new bytes (read-write and read-only)";
    struct child exporting, importing;
    char line[LINE] = "", answer[LINE] = "";
    long long segid;
    unsigned long address;
    child_start(&exporting, remapping_exporter, NULL);
    if (!child_read_line(&exporting, line, sizeof line, STEP_TIMEOUT_MS)
        || sscanf(line, "ready %lld %lu", &segid, &address) != 2) {
        report(name, false, "exporter said '%s'", line);
        child_kill(&exporting);
        return;
    }
    struct remap_setup setup = {.segid = segid, .address = address};
    child_start(&importing, remap_follower, &setup);
    bool cached = child_read_line(&importing, line, sizeof line, STEP_TIMEOUT_MS) && strcmp(line, "cached") == 0;
    child_send(&exporting, "remap");
    bool remapped = child_read_line(&exporting, answer, sizeof answer, STEP_TIMEOUT_MS)
                    && strcmp(answer, "remapped") == 0;
    child_send(&importing, "attach again");
    bool answered = child_read_line(&importing, line, sizeof line, STEP_TIMEOUT_MS);
    int status = child_wait(&importing, STEP_TIMEOUT_MS);
    child_send(&exporting, "quit");
    child_wait(&exporting, STEP_TIMEOUT_MS);
    report(name, cached && remapped && answered && strcmp(line, "ok") == 0 && status == 0,
           "importer: %s; exporter: %s (exit %d)", answered ? line : "no answer", answer, status);
}

/* ---------------------------------------------------------------------------------------------
 * The counters in `xpmemctl clients`: the importer reads them (which reports them to the broker),
 * and the runner asks xpmemctl, the one built beside xpmemd, for the importer's line. */

static int report_counters(int in, int out, void *argument)
{
    const struct importer_setup *setup = argument;
    apply_environment(setup);
    xpmem_apid_t apid = xpmem_get(setup->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    for (int round = 0; round < 3; round++)
        xpmem_detach(attach_window(apid, 12, NULL));
    xpmem_detach(attach_window(apid, 13, NULL));
    struct xpmem_attach_cache_stats stats = stats_now();
    say(out, "hits %llu misses %llu evicted %llu+%llu held %llu (%llu KiB)", (unsigned long long)stats.hits,
        (unsigned long long)stats.misses, (unsigned long long)stats.capacity_evictions,
        (unsigned long long)stats.pressure_evictions, (unsigned long long)stats.entries,
        (unsigned long long)(stats.bytes / 1024));
    char line[LINE];
    hear(in, line, sizeof line); /* stays connected until the runner has looked */
    return 0;
}

static void test_counters_in_xpmemctl_clients(const char *xpmemd)
{
    const char *name = "xpmem_attach_cache_stats reports the counters to the broker: xpmemctl clients shows them "
                       "on the importer's line";
    char xpmemctl[600];
    snprintf(xpmemctl, sizeof xpmemctl, "%s", xpmemd);
    char *slash = strrchr(xpmemctl, '/');
    snprintf(slash != NULL ? slash + 1 : xpmemctl, sizeof xpmemctl - (size_t)(slash != NULL ? slash + 1 - xpmemctl : 0),
             "xpmemctl");
    if (access(xpmemctl, X_OK) != 0) {
        report(name, false, "no %s (swift build builds it beside xpmemd)", xpmemctl);
        return;
    }
    struct importer_setup setup = {.segid = reporting_segid, .entries = NULL};
    struct child importing;
    char expected[LINE] = "", line[LINE] = "", command[1400];
    child_start(&importing, report_counters, &setup);
    bool answered = child_read_line(&importing, expected, sizeof expected, STEP_TIMEOUT_MS);
    bool shown = false;
    snprintf(command, sizeof command, "'%s' clients --socket '%s'", xpmemctl, broker.socket);
    FILE *listing = answered ? popen(command, "r") : NULL;
    char pid[32];
    snprintf(pid, sizeof pid, " %d ", (int)importing.pid);
    while (listing != NULL && fgets(line, sizeof line, listing) != NULL)
        if (strstr(line, pid) != NULL && strstr(line, expected) != NULL)
            shown = true;
    int listed = listing != NULL ? pclose(listing) : -1;
    pid_t importer_pid = importing.pid;
    child_send(&importing, "quit");
    int status = child_wait(&importing, STEP_TIMEOUT_MS);
    report(name, answered && shown && listed == 0 && status == 0,
           "importer said '%s'; no line of pid %d with it in `%s` (exit %d)", expected, (int)importer_pid, command,
           listed);
}

/* ---------------------------------------------------------------------------------------------
 * Memory pressure in a memory cgroup. */

/* The cgroup's limit, and the anonymous memory the importer keeps in it (no swap here: it cannot be
 * reclaimed), leaving about 20 MiB (after the readers' buffers) for the page cache of a file many
 * times that size. The file is sparse:
 * its holes come into the page cache as zeros with no disk read, so the pressure does not depend on
 * the disk (a cold one made almost none). One reader stalls ~25 ms a second here, below the trigger's
 * threshold; several competing to reclaim stall several hundred. */
#define PRESSURE_LIMIT (80UL << 20)
#define PRESSURE_ANONYMOUS (56UL << 20)
#define PRESSURE_FILE_BYTES (1UL << 30)
#define PRESSURE_READERS 4
#define PRESSURE_HELD 4
#define PRESSURE_IDLE 48

/* Reads the file at `argument` over and over, for as long as the process lives. */
static void *read_forever(void *argument)
{
    const char *path = argument;
    static char buffers[PRESSURE_READERS][1 << 20];
    static atomic_int next;
    char *buffer = buffers[atomic_fetch_add(&next, 1) % PRESSURE_READERS];
    for (;;) {
        int descriptor = open(path, O_RDONLY | O_CLOEXEC);
        if (descriptor < 0)
            return NULL;
        while (read(descriptor, buffer, 1 << 20) > 0)
            ;
        close(descriptor);
    }
}

/* In the cgroup: holds PRESSURE_HELD windows, leaves PRESSURE_IDLE idle in the cache, fills
 * PRESSURE_ANONYMOUS, then reads a file many times the room left again and again on
 * PRESSURE_READERS threads (its page cache must be reclaimed within the limit all the time: tasks
 * stall on memory) until the library reports pressure evictions, or a generous deadline passes.
 * Then checks the held windows. Says "ok E I" (pressure evictions, idle windows left) or what went
 * wrong. */
static int pressured_importer(int in, int out, void *argument)
{
    const struct importer_setup *setup = argument;
    apply_environment(setup);
    char line[LINE];
    /* The runner moves this process into the cgroup, then says "go FILE". */
    if (!hear(in, line, sizeof line) || strncmp(line, "go ", 3) != 0)
        return 2;
    const char *path = line + 3;
    struct verdict verdict = {0};
    xpmem_apid_t apid = xpmem_get(setup->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    uint8_t *held[PRESSURE_HELD];
    for (int index = 0; index < PRESSURE_HELD; index++)
        held[index] = attach_window(apid, index, NULL);
    for (int index = 0; index < PRESSURE_IDLE; index++) {
        uint8_t *idle = attach_window(apid, PRESSURE_HELD + index, NULL);
        if (idle == NULL || xpmem_detach(idle) != 0)
            wrong(&verdict, "idle window %d: %s", index, strerror(errno));
    }
    struct xpmem_attach_cache_stats before = stats_now();
    if (before.idle_entries != PRESSURE_IDLE || before.pressure_watch != 1) {
        wrong(&verdict, "before pressure: %llu idle, watch %d", (unsigned long long)before.idle_entries,
              before.pressure_watch);
        return conclude(out, &verdict);
    }
    say(out, "cached %llu", (unsigned long long)before.idle_entries);
    uint8_t *anonymous = mmap(NULL, PRESSURE_ANONYMOUS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (anonymous != MAP_FAILED)
        memset(anonymous, 1, PRESSURE_ANONYMOUS);
    for (int reader = 1; reader < PRESSURE_READERS; reader++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, read_forever, (void *)path) == 0)
            pthread_detach(thread);
    }
    char *buffer = malloc(1 << 20);
    double deadline = now_seconds() + 120;
    struct xpmem_attach_cache_stats during = before;
    while (during.pressure_evictions == 0 && now_seconds() < deadline) {
        int descriptor = open(path, O_RDONLY | O_CLOEXEC);
        if (descriptor < 0)
            break;
        while (read(descriptor, buffer, 1 << 20) > 0 && (during = stats_now()).pressure_evictions == 0)
            ;
        close(descriptor);
    }
    free(buffer);
    struct xpmem_attach_cache_stats after = stats_now();
    if (after.pressure_evictions == 0)
        wrong(&verdict, "no pressure eviction in 120 s (%llu pressure events)",
              (unsigned long long)after.pressure_events);
    if (after.idle_entries >= before.idle_entries)
        wrong(&verdict, "idle windows did not shrink: %llu before, %llu after",
              (unsigned long long)before.idle_entries, (unsigned long long)after.idle_entries);
    if (after.entries - after.idle_entries != PRESSURE_HELD)
        wrong(&verdict, "held windows in the cache: %llu", (unsigned long long)(after.entries - after.idle_entries));
    for (int index = 0; index < PRESSURE_HELD; index++)
        if (held[index] == NULL || !reads_window(held[index], index))
            wrong(&verdict, "held window %d lost the exporter's bytes", index);
    if (verdict.used != 0)
        return conclude(out, &verdict);
    say(out, "ok %llu %llu", (unsigned long long)after.pressure_evictions, (unsigned long long)after.idle_entries);
    return 0;
}

static bool make_sparse_file(const char *path)
{
    int descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (descriptor < 0)
        return false;
    bool ok = ftruncate(descriptor, (off_t)PRESSURE_FILE_BYTES) == 0;
    close(descriptor);
    return ok;
}

static void test_memory_pressure(xpmem_segid_t segid)
{
    const char *name = "under memory pressure in a memory cgroup, idle cached windows are unmapped, held ones keep "
                       "reading the exporter's bytes, and the job finishes";
    struct memory_cgroup cgroup;
    char why[512];
    if (access("/proc/pressure/memory", R_OK) != 0) {
        printf("skip %s: no /proc/pressure/memory (kernel without PSI)\n", name);
        return;
    }
    if (!memory_cgroup_make(&cgroup, why, sizeof why)) {
        printf("skip %s: %s\n", name, why);
        return;
    }
    char path[] = "/var/tmp/xpmem-pressure-XXXXXX";
    int placeholder = mkstemp(path);
    if (placeholder >= 0)
        close(placeholder);
    bool ready = placeholder >= 0 && memory_cgroup_set_limit(&cgroup, PRESSURE_LIMIT) && make_sparse_file(path);
    if (!ready) {
        report(name, false, "setting up %s (limit %lu) or the %lu MiB file %s failed: %s", cgroup.directory, PRESSURE_LIMIT,
               PRESSURE_FILE_BYTES >> 20, path, strerror(errno));
        unlink(path);
        memory_cgroup_remove(&cgroup);
        return;
    }
    struct importer_setup setup = {.segid = segid, .entries = NULL};
    struct child importing;
    child_start(&importing, pressured_importer, &setup);
    char line[LINE] = "", result[LINE] = "";
    bool moved = memory_cgroup_add(&cgroup, importing.pid);
    child_send(&importing, "go %s", path);
    bool cached = moved && child_read_line(&importing, line, sizeof line, STEP_TIMEOUT_MS)
                  && strncmp(line, "cached ", 7) == 0;
    bool answered = cached && child_read_line(&importing, result, sizeof result, 180000);
    int status = child_wait(&importing, STEP_TIMEOUT_MS);
    unsigned long long evicted = 0, left = 0;
    bool ok = answered && sscanf(result, "ok %llu %llu", &evicted, &left) == 2 && status == 0;
    unlink(path);
    memory_cgroup_remove(&cgroup);
    report(name, ok, "%s in %s: %s / %s (exit %d)", cgroup.version_2 ? "cgroup v2 memory.high" : "cgroup v1 limit",
           cgroup.directory, moved ? line : "could not move the importer into the cgroup", result, status);
    if (ok)
        printf("   (%s %lu MiB: %llu of %d idle windows unmapped under pressure, %llu left)\n",
               cgroup.version_2 ? "memory.high" : "memory.limit_in_bytes", PRESSURE_LIMIT >> 20, evicted,
               PRESSURE_IDLE, left);
}

/* ---------------------------------------------------------------------------------------------*/

/* Where the cache's pressure watch reads: the cgroup's memory.pressure under the cgroup2 mount, from
 * made-up texts of /proc/self/cgroup and /proc/self/mountinfo. */
static void test_cgroup_pressure_path(void)
{
    static const char mounts[] = "22 1 0:21 / /proc rw - proc proc rw\n"
                                 "31 24 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
                                 "35 24 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
    /* A container's mount shows part of the hierarchy; spaces and backslashes come as octal escapes. */
    static const char container[] = "40 30 0:30 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    static const char escaped[] = "40 30 0:30 /job\\040a /run/my\\040cgroups\\134v2 rw - cgroup2 cgroup2 rw\n";
    char plain[256] = "", root[256] = "", top[256] = "", below[256] = "", spaced[256] = "", unused[256];
    bool found = cgroup_pressure_path_from("12:memory:/user.slice\n0::/user.slice/job-7\n", mounts, plain, sizeof plain)
                 && cgroup_pressure_path_from("0::/\n", mounts, root, sizeof root)
                 && cgroup_pressure_path_from("0::/docker/abc\n", container, top, sizeof top)
                 && cgroup_pressure_path_from("0::/docker/abc/job\n", container, below, sizeof below)
                 && cgroup_pressure_path_from("0::/job a/step\n", escaped, spaced, sizeof spaced);
    bool refused = !cgroup_pressure_path_from("0::/elsewhere\n", container, unused, sizeof unused)
                   && !cgroup_pressure_path_from("0::/docker/abcdef\n", container, unused, sizeof unused)
                   && !cgroup_pressure_path_from("4:memory:/job\n", mounts, unused, sizeof unused)
                   && !cgroup_pressure_path_from("0::/job\n", "31 24 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw\n",
                                                 unused, sizeof unused)
                   && !cgroup_pressure_path_from("0::/user.slice/job-7\n", mounts, unused, 20);
    report("the pressure watch reads the cgroup's memory.pressure below the cgroup2 mount's root, escapes decoded",
           found && refused && strcmp(plain, "/sys/fs/cgroup/unified/user.slice/job-7/memory.pressure") == 0
               && strcmp(root, "/sys/fs/cgroup/unified/memory.pressure") == 0
               && strcmp(top, "/sys/fs/cgroup/memory.pressure") == 0
               && strcmp(below, "/sys/fs/cgroup/job/memory.pressure") == 0
               && strcmp(spaced, "/run/my cgroups\\v2/step/memory.pressure") == 0,
           "found %d refused %d: '%s' '%s' '%s' '%s' '%s'", found, refused, plain, root, top, below, spaced);
}

int main(void)
{
    const char *xpmemd = broker_start_for_tests(&broker, "XPMEMD");
    if (xpmemd == NULL)
        return report_setup_failure("no broker to test with");
    double started = now_seconds();
    test_cgroup_pressure_path();
    struct child exporting;
    char line[LINE] = "";
    long long segid = -1;
    child_start(&exporting, exporter, NULL);
    if (!child_read_line(&exporting, line, sizeof line, STEP_TIMEOUT_MS) || sscanf(line, "ready %lld", &segid) != 1) {
        report("the exporter starts", false, "it said '%s'", line);
        child_kill(&exporting);
        broker_stop(&broker);
        return report_totals();
    }

    run_importer("an attach of a window already attached is a hit: the same address, counted, two detaches, "
                 "then EINVAL",
                 segid, NULL, hit_returns_the_same_address);
    run_importer("detach leaves the window cached: attaching it again is a hit that reads and writes the "
                 "exporter's memory",
                 segid, NULL, detach_then_attach_hits);
    run_importer("over XPMEM_ATTACH_CACHE_ENTRIES the coldest idle window is unmapped, never a held one", segid, "3",
                 bound_evicts_the_coldest_idle);
    run_importer("xpmem_release unmaps the permit's cached windows too, and only its own", segid, NULL,
                 release_unmaps_cached_windows);
    run_importer("an attach at a fixed address is never served from the cache, nor cached", segid, NULL,
                 fixed_address_is_never_served_from_the_cache);
    run_importer("XPMEM_ATTACH_CACHE_ENTRIES=0 turns caching off: detach unmaps", segid, "0",
                 entries_zero_turns_caching_off);
    run_importer("a bound that is not a number is said on stderr and the default used", segid, "twelve",
                 a_bad_bound_is_said);
    run_importer("4 threads attach and detach 1200 times through a cache of 6: no reference lost, every window "
                 "reads right",
                 segid, "6", threads_share_the_cache);
    run_importer("a fork child starts with an empty cache, without the parent's idle windows", segid, NULL,
                 fork_child_starts_empty);
    test_cached_windows_follow_the_exporter();
    reporting_segid = segid;
    test_counters_in_xpmemctl_clients(xpmemd);
    test_memory_pressure(segid);

    child_send(&exporting, "quit");
    child_wait(&exporting, STEP_TIMEOUT_MS);
    printf("   (attachment cache tests took %.1f s)\n", now_seconds() - started);
    broker_stop(&broker);
    return report_totals();
}
