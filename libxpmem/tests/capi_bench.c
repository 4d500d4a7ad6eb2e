/* The C API's costs, as JSON: the first attach of private heap memory (the exporter copies it
 * into its address-space file and maps the file over it) against process_vm_readv of the same
 * bytes, a warm attach (range already backed, descriptor cached) against a bare mmap, and the
 * attachment cache: a hit against a fresh attach of the same backed window, and the windows it holds
 * over a long run against its bound. Ours and the reference are measured alternately, and each
 * ratio is the median of the pairs' ratios, with their minimum and maximum under "spread". A hit and a
 * detach are also timed among thousands of idle cached windows against among none, for what finding
 * a window in a crowded attachment table costs; and a first attach from an exporter with a thousand
 * more mappings against one without, for what finding one range's mappings costs in a process that
 * has many, as MPI ranks do. Where shmem huge pages are allowed, memory with
 * transparent huge pages is measured backed with huge pages and with 4 KiB ones. Runs its
 * own broker (XPMEM_BROKER names xpmemd). The figures before the attachment cache's are taken with
 * it off (XPMEM_ATTACH_CACHE_ENTRIES=0), so that each attach + detach maps and unmaps as before. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "harness.h"
#include "xpmem.h"

#define PAGE 4096UL

/* Answers "alloc SIZE" (malloc), "crowd COUNT" (COUNT more mappings: "made COUNT"), "alloc-thp SIZE" (2 MiB-aligned anonymous memory that asks for
 * transparent huge pages: "at ADDRESS KB", KB of it huge), "pass ADDRESS SIZE" (reads it all:
 * "took MICROSECONDS") and "free ADDRESS". With a non-NULL argument, backs with 4 KiB pages only
 * (XPMEM_SHMEM_HUGE=0). */
static int exporter(int in, int out, void *argument)
{
    if (argument != NULL)
        setenv("XPMEM_SHMEM_HUGE", "0", 1);
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    say(out, "ready %lld", (long long)segid);
    char line[256];
    while (hear(in, line, sizeof line)) {
        size_t size;
        unsigned long address;
        if (sscanf(line, "alloc %zu", &size) == 1) {
            uint8_t *buffer = malloc(size);
            memset(buffer, 0x3C, size); /* every page present, as in a buffer about to be sent */
            say(out, "at %lu", (unsigned long)(uintptr_t)buffer);
        } else if (sscanf(line, "alloc-thp %zu", &size) == 1) {
            size_t alignment = 2UL << 20;
            uint8_t *reserved = mmap(NULL, size + alignment, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (reserved == MAP_FAILED) {
                say(out, "error mmap %s", strerror(errno));
                continue;
            }
            uint8_t *buffer = (uint8_t *)(((uintptr_t)reserved + alignment - 1) & ~(uintptr_t)(alignment - 1));
            if (buffer > reserved)
                munmap(reserved, (size_t)(buffer - reserved));
            munmap(buffer + size, (size_t)(reserved + size + alignment - (buffer + size)));
            madvise(buffer, size, MADV_HUGEPAGE);
            memset(buffer, 0x3C, size);
            /* Never unmapped, as the heap buffers are not freed: a later buffer at the same address
             * would find the importer's knowledge of it backed, and its attach would measure nothing. */
            say(out, "at %lu %lld", (unsigned long)(uintptr_t)buffer, smaps_kib(buffer, "AnonHugePages:", NULL));
        } else if (sscanf(line, "pass %lu %zu", &address, &size) == 2) {
            const volatile uint64_t *words = (const uint64_t *)(uintptr_t)address;
            double began = now_seconds();
            uint64_t sum = 0;
            for (size_t index = 0; index < size / sizeof *words; index++)
                sum += words[index];
            say(out, "took %.1f %d", (now_seconds() - began) * 1e6, (int)(sum & 1));
        } else if (sscanf(line, "crowd %zu", &size) == 1) {
            /* `size` more mappings, as an MPI rank has hundreds (its libraries, UCX's pools): pairs of
             * pages, the second read-only, so that neither merges with its neighbours. */
            size_t made = 0;
            while (made + 2 <= size) {
                uint8_t *pages = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (pages == MAP_FAILED || mprotect(pages + PAGE, PAGE, PROT_READ) != 0)
                    break;
                made += 2;
            }
            say(out, "made %zu", made);
        } else if (sscanf(line, "free %lu", &address) == 1) {
            free((void *)(uintptr_t)address);
            say(out, "ok");
        } else {
            break;
        }
    }
    return 0;
}

static int compare_doubles(const void *left, const void *right)
{
    double a = *(const double *)left, b = *(const double *)right;
    return a < b ? -1 : a > b;
}

static double median(double *values, int count)
{
    qsort(values, (size_t)count, sizeof *values, compare_doubles);
    return count % 2 ? values[count / 2] : (values[count / 2 - 1] + values[count / 2]) / 2;
}

static uintptr_t ask_alloc(struct child *exporting, size_t size)
{
    char line[256];
    unsigned long address = 0;
    child_send(exporting, "alloc %zu", size);
    if (!child_read_line(exporting, line, sizeof line, 30000) || sscanf(line, "at %lu", &address) != 1)
        return 0;
    return address;
}

/* A ratio from interleaved pairs: median, minimum and maximum of the pairs' ratios. */
struct spread {
    double median, minimum, maximum;
    int pairs;
};

static struct spread spread_of(double *ratios, int count)
{
    struct spread result = {.median = median(ratios, count), .minimum = ratios[0], .maximum = ratios[count - 1],
                            .pairs = count}; /* median() sorted them */
    return result;
}

struct first_attach {
    double attach_us, touch_us, cma_us;
    struct spread ratio;
};

/* Attaches [start, start + span) of the exporter's pages and says how long that took; a failure
 * ends the benchmark. */
static volatile uint8_t *attach_timed(xpmem_apid_t apid, uintptr_t start, size_t span, double *microseconds)
{
    struct xpmem_addr where = {.apid = apid, .offset = (off_t)start};
    double began = now_seconds();
    volatile uint8_t *window = xpmem_attach(where, span, NULL);
    *microseconds = (now_seconds() - began) * 1e6;
    if (window == (void *)-1) {
        fprintf(stderr, "attach: %s\n", strerror(errno));
        exit(1);
    }
    return window;
}

/* Medians over `trials` fresh buffers of `size` bytes. */
static struct first_attach measure_first_attach(struct child *exporting, xpmem_apid_t apid, size_t size, int trials)
{
    double attach[32], touch[32], cma[32], ratios[32];
    uint8_t *destination = malloc(size);
    memset(destination, 0, size);
    for (int trial = 0; trial < trials; trial++) {
        uintptr_t address = ask_alloc(exporting, size);
        uintptr_t start = address & ~(PAGE - 1);
        size_t span = ((address + size + PAGE - 1) & ~(PAGE - 1)) - start;

        struct iovec local = {.iov_base = destination, .iov_len = size};
        struct iovec remote = {.iov_base = (void *)address, .iov_len = size};
        double began = now_seconds();
        ssize_t copied = process_vm_readv(exporting->pid, &local, 1, &remote, 1, 0);
        cma[trial] = (now_seconds() - began) * 1e6;
        if (copied != (ssize_t)size)
            fprintf(stderr, "process_vm_readv: %s\n", strerror(errno));

        volatile uint8_t *window = attach_timed(apid, start, span, &attach[trial]);
        began = now_seconds();
        unsigned sum = 0;
        for (size_t offset = 0; offset < span; offset += PAGE)
            sum += window[offset];
        touch[trial] = (now_seconds() - began) * 1e6;
        (void)sum;
        xpmem_detach((void *)window);
        ratios[trial] = attach[trial] / cma[trial];
        /* Not freed: a later buffer at the same address would reuse the importer's cached knowledge
         * of the backed range, and its first attach would cost a page fault per 2 MiB instead. */
    }
    free(destination);
    struct first_attach result = {median(attach, trials), median(touch, trials), median(cma, trials),
                                  spread_of(ratios, trials)};
    return result;
}

/* The first attach of 1 MiB from an exporter with CROWD_MAPPINGS more mappings than `alone` has,
 * against the same from `alone`, alternately: what finding the mappings of one range costs when
 * the process has many. */
#define CROWD_MAPPINGS 1000
struct crowded_exporter_figures {
    double crowded_us, alone_us;
    struct spread ratio;
    char why_not[200];
};

static void measure_first_attach_crowded(struct child *alone, xpmem_apid_t alone_apid,
                                         struct crowded_exporter_figures *figures)
{
    enum { TRIALS = 15 };
    const size_t size = 1UL << 20;
    memset(figures, 0, sizeof *figures);
    struct child crowded;
    child_start(&crowded, exporter, NULL);
    char line[256] = "";
    long long segid = -1;
    size_t made = 0;
    xpmem_apid_t apid = -1;
    if (child_read_line(&crowded, line, sizeof line, 15000) && sscanf(line, "ready %lld", &segid) == 1)
        apid = xpmem_get(segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    child_send(&crowded, "crowd %d", CROWD_MAPPINGS);
    if (apid < 0 || !child_read_line(&crowded, line, sizeof line, 30000) || sscanf(line, "made %zu", &made) != 1
        || made != CROWD_MAPPINGS) {
        snprintf(figures->why_not, sizeof figures->why_not, "the crowded exporter did not start (%s)", line);
    } else {
        double crowded_us[TRIALS], alone_us[TRIALS], ratios[TRIALS];
        struct child *children[2] = {&crowded, alone};
        xpmem_apid_t apids[2] = {apid, alone_apid};
        for (int trial = 0; trial < TRIALS; trial++) {
            for (int turn = 0; turn < 2; turn++) {
                int which = (trial + turn) % 2; /* A B, then B A */
                uintptr_t address = ask_alloc(children[which], size);
                if (address == 0) {
                    fprintf(stderr, "crowded first attach: the exporter allocated nothing\n");
                    exit(1);
                }
                uintptr_t start = address & ~(PAGE - 1);
                size_t span = ((address + size + PAGE - 1) & ~(PAGE - 1)) - start;
                double *took = which == 0 ? &crowded_us[trial] : &alone_us[trial];
                xpmem_detach((void *)attach_timed(apids[which], start, span, took));
            }
            ratios[trial] = crowded_us[trial] / alone_us[trial];
        }
        figures->ratio = spread_of(ratios, TRIALS);
        figures->crowded_us = median(crowded_us, TRIALS);
        figures->alone_us = median(alone_us, TRIALS);
    }
    if (apid >= 0)
        xpmem_release(apid);
    child_send(&crowded, "quit");
    child_wait(&crowded, 15000);
}

/* Memory with transparent huge pages, where shmem huge pages are allowed: two exporters, one backing
 * huge pages as huge pages (the default), one with 4 KiB pages (XPMEM_SHMEM_HUGE=0), alternately,
 * each trial a fresh 64 MiB: the first attach (and process_vm_readv of the same bytes), the
 * importer's first touch of every page, and the exporter's first read of all of it after. */
struct huge_figures {
    bool measured;
    char why_not[400];
    double attach_us, attach_4k_us, cma_us, touch_us, touch_4k_us, pass_us, pass_4k_us;
    long long private_huge_kib;
    struct spread vs_cma, attach_vs_4k, touch_vs_4k, pass_vs_4k;
};

/* The selected word of shmem_enabled allows huge pages for a mapping that asks. */
static bool shmem_allows_huge(char *selected, size_t capacity)
{
    thp_setting("shmem_enabled", selected, capacity);
    return strcmp(selected, "advise") == 0 || strcmp(selected, "always") == 0 || strcmp(selected, "within_size") == 0
           || strcmp(selected, "force") == 0;
}

/* One trial on one exporter: false when a step failed (why in figures->why_not). */
static bool huge_trial(struct child *exporting, xpmem_apid_t apid, size_t size, double *attach, double *cma,
                       double *touch, double *pass, long long *huge_kib, struct huge_figures *figures)
{
    char line[256];
    unsigned long address = 0;
    child_send(exporting, "alloc-thp %zu", size);
    if (!child_read_line(exporting, line, sizeof line, 30000) || sscanf(line, "at %lu %lld", &address, huge_kib) != 2) {
        snprintf(figures->why_not, sizeof figures->why_not, "the exporter said '%s'", line);
        return false;
    }
    uint8_t *destination = malloc(size);
    memset(destination, 0, size);
    struct iovec local = {.iov_base = destination, .iov_len = size};
    struct iovec remote = {.iov_base = (void *)address, .iov_len = size};
    double began = now_seconds();
    ssize_t copied = process_vm_readv(exporting->pid, &local, 1, &remote, 1, 0);
    *cma = (now_seconds() - began) * 1e6;
    free(destination);
    struct xpmem_addr where = {.apid = apid, .offset = (off_t)address};
    began = now_seconds();
    volatile uint8_t *window = xpmem_attach(where, size, NULL);
    *attach = (now_seconds() - began) * 1e6;
    if (copied != (ssize_t)size || window == (void *)-1) {
        snprintf(figures->why_not, sizeof figures->why_not, "process_vm_readv or attach failed: %s", strerror(errno));
        return false;
    }
    began = now_seconds();
    unsigned sum = 0;
    for (size_t offset = 0; offset < size; offset += PAGE)
        sum += window[offset];
    *touch = (now_seconds() - began) * 1e6;
    (void)sum;
    xpmem_detach((void *)window);
    child_send(exporting, "pass %lu %zu", address, size);
    if (!child_read_line(exporting, line, sizeof line, 30000) || sscanf(line, "took %lf", pass) != 1) {
        snprintf(figures->why_not, sizeof figures->why_not, "the exporter's pass said '%s'", line);
        return false;
    }
    return true;
}

static void measure_huge_pages(struct huge_figures *figures)
{
    enum { TRIALS = 5 };
    const size_t size = 64UL << 20;
    char selected[32];
    memset(figures, 0, sizeof *figures);
    if (!shmem_allows_huge(selected, sizeof selected)) {
        snprintf(figures->why_not, sizeof figures->why_not,
                 "shmem_enabled is '%s': shared memory gets no huge pages here (an administrator can allow them with "
                 "advise)", selected);
        return;
    }
    struct child exporters[2];
    xpmem_apid_t apids[2] = {-1, -1};
    for (int index = 0; index < 2; index++) {
        char line[256] = "";
        long long segid = -1;
        child_start(&exporters[index], exporter, index == 0 ? NULL : "4k");
        if (child_read_line(&exporters[index], line, sizeof line, 15000) && sscanf(line, "ready %lld", &segid) == 1)
            apids[index] = xpmem_get(segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    }
    double attach[2][TRIALS], cma[2][TRIALS], touch[2][TRIALS], pass[2][TRIALS];
    double vs_cma[TRIALS], attach_ratio[TRIALS], touch_ratio[TRIALS], pass_ratio[TRIALS];
    bool ok = apids[0] >= 0 && apids[1] >= 0;
    if (!ok)
        snprintf(figures->why_not, sizeof figures->why_not, "the exporters did not start");
    long long least_huge = -1;
    for (int trial = 0; ok && trial < TRIALS; trial++) {
        for (int turn = 0; ok && turn < 2; turn++) {
            int which = (trial + turn) % 2; /* A B, then B A */
            long long huge_kib = 0;
            ok = huge_trial(&exporters[which], apids[which], size, &attach[which][trial], &cma[which][trial],
                            &touch[which][trial], &pass[which][trial], &huge_kib, figures);
            if (least_huge < 0 || huge_kib < least_huge)
                least_huge = huge_kib;
        }
        if (ok) {
            vs_cma[trial] = attach[0][trial] / cma[0][trial];
            attach_ratio[trial] = attach[0][trial] / attach[1][trial];
            touch_ratio[trial] = touch[0][trial] / touch[1][trial];
            pass_ratio[trial] = pass[0][trial] / pass[1][trial];
        }
    }
    for (int index = 0; index < 2; index++) {
        child_send(&exporters[index], "quit");
        child_wait(&exporters[index], 15000);
    }
    if (!ok)
        return;
    if (least_huge < (long long)(size >> 10)) {
        snprintf(figures->why_not, sizeof figures->why_not,
                 "the exporter's memory got %lld of %zu kB in huge pages (THP enabled must allow madvise)", least_huge,
                 size >> 10);
        return;
    }
    figures->measured = true;
    figures->private_huge_kib = least_huge;
    figures->attach_us = median(attach[0], TRIALS);
    figures->attach_4k_us = median(attach[1], TRIALS);
    double both_cma[2 * TRIALS];
    memcpy(both_cma, cma[0], sizeof cma[0]);
    memcpy(both_cma + TRIALS, cma[1], sizeof cma[1]);
    figures->cma_us = median(both_cma, 2 * TRIALS);
    figures->touch_us = median(touch[0], TRIALS);
    figures->touch_4k_us = median(touch[1], TRIALS);
    figures->pass_us = median(pass[0], TRIALS);
    figures->pass_4k_us = median(pass[1], TRIALS);
    figures->vs_cma = spread_of(vs_cma, TRIALS);
    figures->attach_vs_4k = spread_of(attach_ratio, TRIALS);
    figures->touch_vs_4k = spread_of(touch_ratio, TRIALS);
    figures->pass_vs_4k = spread_of(pass_ratio, TRIALS);
}

/* Attach of a window already backed (no broker round trip) against a bare mmap of a memfd of the
 * same length, in alternating batches; and attach through the broker (XPMEM_ATTACH_CACHE=0). */
static void measure_warm(struct child *exporting, xpmem_apid_t apid, size_t size, double *warm_us, double *mmap_us,
                         double *broker_us, struct spread *ratio)
{
    enum { BATCHES = 15, ROUNDS = 40 };
    static double samples[ROUNDS], warm[BATCHES], bare[BATCHES], ratios[BATCHES];
    uintptr_t address = ask_alloc(exporting, size);
    uintptr_t start = address & ~(PAGE - 1);
    struct xpmem_addr where = {.apid = apid, .offset = (off_t)start};
    void *first = xpmem_attach(where, size, NULL); /* backs it */
    xpmem_detach(first);
    int file = memfd_create("bench", MFD_CLOEXEC);
    if (ftruncate(file, (off_t)size) < 0)
        exit(1);
    for (int batch = 0; batch < BATCHES; batch++) {
        for (int round = 0; round < ROUNDS; round++) {
            double began = now_seconds();
            void *window = xpmem_attach(where, size, NULL);
            samples[round] = (now_seconds() - began) * 1e6;
            xpmem_detach(window);
        }
        warm[batch] = median(samples, ROUNDS);
        for (int round = 0; round < ROUNDS; round++) {
            double began = now_seconds();
            void *mapped = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, file, 0);
            samples[round] = (now_seconds() - began) * 1e6;
            munmap(mapped, size);
        }
        bare[batch] = median(samples, ROUNDS);
        ratios[batch] = warm[batch] / bare[batch];
    }
    close(file);
    *ratio = spread_of(ratios, BATCHES);
    *warm_us = median(warm, BATCHES);
    *mmap_us = median(bare, BATCHES);

    setenv("XPMEM_ATTACH_CACHE", "0", 1); /* every attach asks the broker */
    for (int round = 0; round < ROUNDS; round++) {
        double began = now_seconds();
        void *window = xpmem_attach(where, size, NULL);
        samples[round] = (now_seconds() - began) * 1e6;
        xpmem_detach(window);
    }
    unsetenv("XPMEM_ATTACH_CACHE");
    *broker_us = median(samples, ROUNDS);
}

static void print_spread(const char *name, struct spread value, bool last)
{
    printf("    \"%s\": {\"median\": %.3f, \"minimum\": %.3f, \"maximum\": %.3f, \"pairs\": %d}%s\n", name, value.median,
           value.minimum, value.maximum, value.pairs, last ? "" : ",");
}

/* ---------------------------------------------------------------------------------------------
 * The attachment cache, measured in importers of their own (the cache's bounds are read once per
 * process): one with the cache on, one with it off, driven batch by batch in turn. */

struct cache_importer {
    xpmem_segid_t segid;
    const char *entries; /* XPMEM_ATTACH_CACHE_ENTRIES */
};

/* Attaches the window once, then `rounds` times attach + detach, each timed apart into `attaches`
 * and `detaches` (µs). -1 if an attach fails. */
static int time_attaches(xpmem_apid_t apid, unsigned long address, size_t size, int rounds, double *attaches,
                         double *detaches)
{
    struct xpmem_addr where = {.apid = apid, .offset = (off_t)address};
    xpmem_detach(xpmem_attach(where, size, NULL));
    for (int round = 0; round < rounds; round++) {
        double began = now_seconds();
        void *window = xpmem_attach(where, size, NULL);
        attaches[round] = (now_seconds() - began) * 1e6;
        if (window == (void *)-1)
            return -1;
        began = now_seconds();
        xpmem_detach(window);
        detaches[round] = (now_seconds() - began) * 1e6;
    }
    return 0;
}

/* "attach ADDRESS SIZE ROUNDS": attaches the window once, then ROUNDS times attach (timed) + detach;
 * says the median µs. With the cache on each timed attach is a hit; off, a fresh mmap of the backed
 * range. "hold ADDRESS SIZE ROUNDS": the same, but the attach and the detach timed apart; says both
 * medians. "fill BASE WINDOWS SIZE": attaches and detaches WINDOWS windows of SIZE bytes from BASE,
 * left cached and idle; says how many idle windows the cache holds. "long BASE WINDOWS SIZE
 * OPERATIONS": a long run over WINDOWS windows of SIZE bytes from BASE, 7 in 8 attaches from a hot
 * eighth of them; says what the cache held at most and at the end. */
static int cache_importer(int in, int out, void *argument)
{
    const struct cache_importer *setup = argument;
    setenv("XPMEM_ATTACH_CACHE_ENTRIES", setup->entries, 1);
    xpmem_apid_t apid = xpmem_get(setup->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    char line[256];
    static double samples[1000], detach_samples[1000];
    while (hear(in, line, sizeof line)) {
        unsigned long address, windows, operations;
        size_t size;
        int rounds;
        bool holding = false;
        if ((sscanf(line, "attach %lu %zu %d", &address, &size, &rounds) == 3
             || (holding = sscanf(line, "hold %lu %zu %d", &address, &size, &rounds) == 3))
            && rounds <= 1000) {
            if (time_attaches(apid, address, size, rounds, samples, detach_samples) < 0)
                return 2;
            if (holding)
                say(out, "%.3f %.3f", median(samples, rounds), median(detach_samples, rounds));
            else
                say(out, "%.3f", median(samples, rounds));
        } else if (sscanf(line, "fill %lu %lu %zu", &address, &windows, &size) == 3) {
            for (unsigned long window = 0; window < windows; window++) {
                struct xpmem_addr where = {.apid = apid, .offset = (off_t)(address + window * size)};
                void *mapped = xpmem_attach(where, size, NULL);
                if (mapped == (void *)-1)
                    return 4;
                xpmem_detach(mapped);
            }
            struct xpmem_attach_cache_stats stats;
            xpmem_attach_cache_stats(&stats);
            say(out, "%llu", (unsigned long long)stats.idle_entries);
        } else if (sscanf(line, "long %lu %lu %zu %lu", &address, &windows, &size, &operations) == 4) {
            uint64_t state = 0x9E3779B97F4A7C15ULL, max_entries = 0, max_bytes = 0;
            struct xpmem_attach_cache_stats stats;
            for (unsigned long operation = 0; operation < operations; operation++) {
                state = state * 6364136223846793005ULL + 1442695040888963407ULL;
                uint64_t draw = state >> 33;
                unsigned long window = (draw & 7) != 0 ? (draw >> 3) % (windows / 8) : (draw >> 3) % windows;
                struct xpmem_addr where = {.apid = apid, .offset = (off_t)(address + window * size)};
                void *mapped = xpmem_attach(where, size, NULL);
                if (mapped == (void *)-1)
                    return 3;
                xpmem_detach(mapped);
                if (operation % 64 == 0) {
                    xpmem_attach_cache_stats(&stats);
                    max_entries = stats.entries > max_entries ? stats.entries : max_entries;
                    max_bytes = stats.bytes > max_bytes ? stats.bytes : max_bytes;
                }
            }
            xpmem_attach_cache_stats(&stats);
            say(out, "%llu %llu %llu %llu %llu %llu %llu %llu", (unsigned long long)max_entries,
                (unsigned long long)stats.entries, (unsigned long long)stats.max_entries,
                (unsigned long long)max_bytes, (unsigned long long)stats.hits, (unsigned long long)stats.misses,
                (unsigned long long)stats.capacity_evictions, (unsigned long long)stats.bytes);
        } else {
            break;
        }
    }
    return 0;
}

static double ask_median(struct child *importer, const char *command)
{
    char line[256];
    double value = -1;
    child_send(importer, "%s", command);
    if (!child_read_line(importer, line, sizeof line, 60000) || sscanf(line, "%lf", &value) != 1) {
        fprintf(stderr, "cache importer: '%s'\n", line);
        exit(1);
    }
    return value;
}

struct cache_figures {
    double hit_us, fresh_us;
    struct spread ratio;
    unsigned long long max_entries, final_entries, bound, max_bytes, hits, misses, evictions, final_bytes;
    unsigned long windows, operations;
};

static void measure_attach_cache(struct child *exporting, xpmem_segid_t segid, struct cache_figures *figures)
{
    enum { BATCHES = 15, ROUNDS = 40 };
    static double hit[BATCHES], fresh[BATCHES], ratios[BATCHES];
    struct cache_importer on = {.segid = segid, .entries = "512"}, off = {.segid = segid, .entries = "0"};
    struct child cached, uncached;
    child_start(&cached, cache_importer, &on);
    child_start(&uncached, cache_importer, &off);
    uintptr_t start = ask_alloc(exporting, 1UL << 20) & ~(PAGE - 1);
    char command[128];
    snprintf(command, sizeof command, "attach %lu %lu %d", (unsigned long)start, 1UL << 20, ROUNDS);
    /* Each importer's first attach backs the range (a broker round trip); the warm-up takes it. */
    ask_median(&cached, command);
    ask_median(&uncached, command);
    for (int batch = 0; batch < BATCHES; batch++) {
        /* A B, then B A: drift in the machine's speed hits both alike. */
        if (batch % 2 == 0) {
            hit[batch] = ask_median(&cached, command);
            fresh[batch] = ask_median(&uncached, command);
        } else {
            fresh[batch] = ask_median(&uncached, command);
            hit[batch] = ask_median(&cached, command);
        }
        ratios[batch] = hit[batch] / fresh[batch];
    }
    figures->ratio = spread_of(ratios, BATCHES);
    figures->hit_us = median(hit, BATCHES);
    figures->fresh_us = median(fresh, BATCHES);

    /* The long run: 4096 windows of 16 KiB, 200000 attach + detach, a bound of 512 windows. */
    figures->windows = 4096;
    figures->operations = 200000;
    size_t size = 16 * 1024;
    uintptr_t base = (ask_alloc(exporting, figures->windows * size + PAGE) + PAGE - 1) & ~(PAGE - 1);
    char line[512];
    child_send(&cached, "long %lu %lu %zu %lu", (unsigned long)base, figures->windows, size, figures->operations);
    if (!child_read_line(&cached, line, sizeof line, 600000)
        || sscanf(line, "%llu %llu %llu %llu %llu %llu %llu %llu", &figures->max_entries, &figures->final_entries,
                  &figures->bound, &figures->max_bytes, &figures->hits, &figures->misses, &figures->evictions,
                  &figures->final_bytes) != 8) {
        fprintf(stderr, "long run: '%s'\n", line);
        exit(1);
    }
    child_send(&cached, "quit");
    child_send(&uncached, "quit");
    child_wait(&cached, 15000);
    child_wait(&uncached, 15000);
}

struct crowding_figures {
    unsigned long long idle_windows; /* what the crowded importer's cache held besides the timed window */
    double crowded_hit_us, alone_hit_us, crowded_detach_us, alone_detach_us;
    struct spread hit_ratio, detach_ratio;
};

static void ask_hold(struct child *importer, const char *command, double *attach_us, double *detach_us)
{
    char line[256];
    child_send(importer, "%s", command);
    if (!child_read_line(importer, line, sizeof line, 60000) || sscanf(line, "%lf %lf", attach_us, detach_us) != 2) {
        fprintf(stderr, "cache importer: '%s'\n", line);
        exit(1);
    }
}

/* A hit and a detach of one window in an importer whose cache also holds IDLE_WINDOWS idle windows
 * (the default bound's worth) against one whose cache holds that window alone, in interleaved
 * batches. Both bounds are twice that, so that nothing is evicted while timing. */
static void measure_crowded_cache(struct child *exporting, xpmem_segid_t segid, struct crowding_figures *figures)
{
    enum { BATCHES = 15, ROUNDS = 200, IDLE_WINDOWS = 4096 };
    static double crowded_hit[BATCHES], alone_hit[BATCHES], crowded_detach[BATCHES], alone_detach[BATCHES];
    static double hit_ratios[BATCHES], detach_ratios[BATCHES];
    struct cache_importer roomy = {.segid = segid, .entries = "8192"};
    struct child crowded, alone;
    child_start(&crowded, cache_importer, &roomy);
    child_start(&alone, cache_importer, &roomy);

    uintptr_t base = (ask_alloc(exporting, IDLE_WINDOWS * PAGE + PAGE) + PAGE - 1) & ~(PAGE - 1);
    char line[256];
    child_send(&crowded, "fill %lu %d %lu", (unsigned long)base, IDLE_WINDOWS, PAGE);
    if (!child_read_line(&crowded, line, sizeof line, 600000) || sscanf(line, "%llu", &figures->idle_windows) != 1) {
        fprintf(stderr, "fill: '%s'\n", line);
        exit(1);
    }
    uintptr_t timed = (ask_alloc(exporting, 64 * 1024 + PAGE) + PAGE - 1) & ~(PAGE - 1);
    char command[128];
    snprintf(command, sizeof command, "hold %lu %lu %d", (unsigned long)timed, 64 * 1024UL, ROUNDS);
    double ignored_attach, ignored_detach; /* the warm-up: each importer's first attach asks the broker */
    ask_hold(&crowded, command, &ignored_attach, &ignored_detach);
    ask_hold(&alone, command, &ignored_attach, &ignored_detach);
    for (int batch = 0; batch < BATCHES; batch++) {
        if (batch % 2 == 0) {
            ask_hold(&crowded, command, &crowded_hit[batch], &crowded_detach[batch]);
            ask_hold(&alone, command, &alone_hit[batch], &alone_detach[batch]);
        } else {
            ask_hold(&alone, command, &alone_hit[batch], &alone_detach[batch]);
            ask_hold(&crowded, command, &crowded_hit[batch], &crowded_detach[batch]);
        }
        hit_ratios[batch] = crowded_hit[batch] / alone_hit[batch];
        detach_ratios[batch] = crowded_detach[batch] / alone_detach[batch];
    }
    figures->hit_ratio = spread_of(hit_ratios, BATCHES);
    figures->detach_ratio = spread_of(detach_ratios, BATCHES);
    figures->crowded_hit_us = median(crowded_hit, BATCHES);
    figures->alone_hit_us = median(alone_hit, BATCHES);
    figures->crowded_detach_us = median(crowded_detach, BATCHES);
    figures->alone_detach_us = median(alone_detach, BATCHES);
    child_send(&crowded, "quit");
    child_send(&alone, "quit");
    child_wait(&crowded, 15000);
    child_wait(&alone, 15000);
}

/* xpmem_get and xpmem_release: each one round trip to the broker, which answers alone (the reply
 * is polled for), as UCX and MPICH do once per peer. Medians in microseconds. */
static void measure_get_release(long long segid, double *get_us, double *release_us)
{
    enum { ROUNDS = 200 };
    static double gets[ROUNDS], releases[ROUNDS];
    for (int round = 0; round < ROUNDS; round++) {
        double began = now_seconds();
        xpmem_apid_t apid = xpmem_get(segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
        double got = now_seconds();
        if (apid < 0) {
            perror("xpmem_get");
            exit(1);
        }
        xpmem_release(apid);
        gets[round] = (got - began) * 1e6;
        releases[round] = (now_seconds() - got) * 1e6;
    }
    *get_us = median(gets, ROUNDS);
    *release_us = median(releases, ROUNDS);
}

int main(void)
{
    struct broker broker;
    if (broker_start_for_tests(&broker, "XPMEM_BROKER") == NULL)
        return 1;
    /* This process measures the paths without the attachment cache; its importers set their own. */
    setenv("XPMEM_ATTACH_CACHE_ENTRIES", "0", 1);

    struct child exporting;
    child_start(&exporting, exporter, NULL);
    char line[256];
    long long segid = -1;
    if (!child_read_line(&exporting, line, sizeof line, 15000) || sscanf(line, "ready %lld", &segid) != 1) {
        fprintf(stderr, "exporter: %s\n", line);
        return 1;
    }
    xpmem_apid_t apid = xpmem_get(segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    if (apid < 0) {
        perror("xpmem_get");
        return 1;
    }
    struct first_attach one = measure_first_attach(&exporting, apid, 1UL << 20, 15);
    struct first_attach sixty_four = measure_first_attach(&exporting, apid, 64UL << 20, 5);
    struct crowded_exporter_figures crowded_exporter;
    measure_first_attach_crowded(&exporting, apid, &crowded_exporter);
    double warm_us, mmap_us, broker_us;
    struct spread warm_ratio;
    measure_warm(&exporting, apid, 1UL << 20, &warm_us, &mmap_us, &broker_us, &warm_ratio);
    struct cache_figures cache;
    measure_attach_cache(&exporting, segid, &cache);
    struct crowding_figures crowding;
    measure_crowded_cache(&exporting, segid, &crowding);
    double get_us, release_us;
    measure_get_release(segid, &get_us, &release_us);

    child_send(&exporting, "quit");
    child_wait(&exporting, 15000);
    struct huge_figures huge;
    measure_huge_pages(&huge);
    broker_stop(&broker);

    printf("{\n");
    printf("  \"first_attach_1MiB_us\": %.1f,\n  \"cma_1MiB_us\": %.1f,\n  \"touch_after_attach_1MiB_us\": %.1f,\n",
           one.attach_us, one.cma_us, one.touch_us);
    printf("  \"first_attach_64MiB_us\": %.1f,\n  \"cma_64MiB_us\": %.1f,\n  \"touch_after_attach_64MiB_us\": %.1f,\n",
           sixty_four.attach_us, sixty_four.cma_us, sixty_four.touch_us);
    if (crowded_exporter.why_not[0] == '\0')
        printf("  \"first_attach_1MiB_crowded_exporter\": {\"more_mappings\": %d, \"first_attach_us\": %.1f, "
               "\"first_attach_alone_us\": %.1f},\n",
               CROWD_MAPPINGS, crowded_exporter.crowded_us, crowded_exporter.alone_us);
    else
        printf("  \"first_attach_1MiB_crowded_exporter_not_measured\": \"%s\",\n", crowded_exporter.why_not);
    printf("  \"warm_attach_1MiB_us\": %.2f,\n  \"warm_attach_through_broker_1MiB_us\": %.2f,\n  \"bare_mmap_1MiB_us\": %.2f,\n",
           warm_us, broker_us, mmap_us);
    printf("  \"get_us\": %.1f,\n  \"release_us\": %.1f,\n", get_us, release_us);
    printf("  \"attach_cache_hit_1MiB_us\": %.3f,\n  \"fresh_attach_1MiB_us\": %.3f,\n", cache.hit_us, cache.fresh_us);
    printf("  \"attach_cache_long_run\": {\"windows\": %lu, \"window_bytes\": 16384, \"operations\": %lu, "
           "\"bound_entries\": %llu, \"max_entries_held\": %llu, \"final_entries\": %llu, \"max_bytes_held\": %llu, "
           "\"final_bytes\": %llu, \"hits\": %llu, \"misses\": %llu, \"capacity_evictions\": %llu},\n",
           cache.windows, cache.operations, cache.bound, cache.max_entries, cache.final_entries, cache.max_bytes,
           cache.final_bytes, cache.hits, cache.misses, cache.evictions);
    printf("  \"attach_cache_crowded\": {\"idle_windows\": %llu, \"hit_64KiB_us\": %.3f, \"hit_alone_64KiB_us\": %.3f, "
           "\"detach_64KiB_us\": %.3f, \"detach_alone_64KiB_us\": %.3f},\n",
           crowding.idle_windows, crowding.crowded_hit_us, crowding.alone_hit_us, crowding.crowded_detach_us,
           crowding.alone_detach_us);
    if (huge.measured)
        printf("  \"huge_pages_64MiB\": {\"private_huge_kib\": %lld, \"first_attach_us\": %.1f, \"first_attach_4k_us\": %.1f, "
               "\"cma_us\": %.1f, \"touch_after_attach_us\": %.1f, \"touch_after_attach_4k_us\": %.1f, "
               "\"exporter_pass_after_us\": %.1f, \"exporter_pass_after_4k_us\": %.1f},\n",
               huge.private_huge_kib, huge.attach_us, huge.attach_4k_us, huge.cma_us, huge.touch_us, huge.touch_4k_us,
               huge.pass_us, huge.pass_4k_us);
    else
        printf("  \"huge_pages_64MiB_not_measured\": \"%s\",\n", huge.why_not);
    printf("  \"ratios\": {\n");
    printf("    \"attach_cache_hit_vs_fresh_attach\": %.3f,\n", cache.ratio.median);
    printf("    \"attach_cache_hit_crowded_vs_alone\": %.3f,\n", crowding.hit_ratio.median);
    printf("    \"detach_crowded_vs_alone\": %.3f,\n", crowding.detach_ratio.median);
    printf("    \"warm_attach_vs_mmap\": %.2f,\n", warm_ratio.median);
    printf("    \"first_attach_1MiB_vs_cma\": %.2f,\n", one.ratio.median);
    bool crowded_measured = crowded_exporter.why_not[0] == '\0';
    printf("    \"first_attach_64MiB_vs_cma\": %.2f%s\n", sixty_four.ratio.median, crowded_measured ? "," : "");
    if (crowded_measured)
        printf("    \"first_attach_1MiB_crowded_vs_alone\": %.2f\n", crowded_exporter.ratio.median);
    printf("  },\n  \"spread\": {\n");
    print_spread("attach_cache_hit_vs_fresh_attach", cache.ratio, false);
    print_spread("attach_cache_hit_crowded_vs_alone", crowding.hit_ratio, false);
    print_spread("detach_crowded_vs_alone", crowding.detach_ratio, false);
    print_spread("warm_attach_vs_mmap", warm_ratio, false);
    print_spread("first_attach_1MiB_vs_cma", one.ratio, false);
    print_spread("first_attach_64MiB_vs_cma", sixty_four.ratio, !crowded_measured && !huge.measured);
    if (crowded_measured)
        print_spread("first_attach_1MiB_crowded_vs_alone", crowded_exporter.ratio, !huge.measured);
    if (huge.measured) {
        print_spread("first_attach_64MiB_thp_vs_cma", huge.vs_cma, false);
        print_spread("first_attach_64MiB_thp_huge_vs_4k", huge.attach_vs_4k, false);
        print_spread("touch_after_attach_64MiB_thp_huge_vs_4k", huge.touch_vs_4k, false);
        print_spread("exporter_pass_after_attach_64MiB_thp_huge_vs_4k", huge.pass_vs_4k, true);
    }
    printf("  }\n}\n");
    return 0;
}
