/* The C API's costs, as JSON: the first attach of private heap memory (the exporter copies it
 * into its address-space file and maps the file over it) against process_vm_readv of the same
 * bytes, and a warm attach (range already backed, descriptor cached) against a bare mmap. Ours and
 * the reference are measured alternately, and each ratio is the median of the pairs' ratios, with
 * their minimum and maximum under "spread". Runs its own broker (XPMEM_BROKER names xpmemd). */
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

static int exporter(int in, int out, void *argument)
{
    (void)argument;
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

        struct xpmem_addr where = {.apid = apid, .offset = (off_t)start};
        began = now_seconds();
        volatile uint8_t *window = xpmem_attach(where, span, NULL);
        attach[trial] = (now_seconds() - began) * 1e6;
        if (window == (void *)-1) {
            fprintf(stderr, "attach: %s\n", strerror(errno));
            exit(1);
        }
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
    printf("    \"%s\": {\"median\": %.2f, \"minimum\": %.2f, \"maximum\": %.2f, \"pairs\": %d}%s\n", name, value.median,
           value.minimum, value.maximum, value.pairs, last ? "" : ",");
}

int main(void)
{
    struct broker broker;
    if (broker_start_for_tests(&broker, "XPMEM_BROKER") == NULL)
        return 1;

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
    double warm_us, mmap_us, broker_us;
    struct spread warm_ratio;
    measure_warm(&exporting, apid, 1UL << 20, &warm_us, &mmap_us, &broker_us, &warm_ratio);

    child_send(&exporting, "quit");
    child_wait(&exporting, 15000);
    broker_stop(&broker);

    printf("{\n");
    printf("  \"first_attach_1MiB_us\": %.1f,\n  \"cma_1MiB_us\": %.1f,\n  \"touch_after_attach_1MiB_us\": %.1f,\n",
           one.attach_us, one.cma_us, one.touch_us);
    printf("  \"first_attach_64MiB_us\": %.1f,\n  \"cma_64MiB_us\": %.1f,\n  \"touch_after_attach_64MiB_us\": %.1f,\n",
           sixty_four.attach_us, sixty_four.cma_us, sixty_four.touch_us);
    printf("  \"warm_attach_1MiB_us\": %.2f,\n  \"warm_attach_through_broker_1MiB_us\": %.2f,\n  \"bare_mmap_1MiB_us\": %.2f,\n",
           warm_us, broker_us, mmap_us);
    printf("  \"ratios\": {\n");
    printf("    \"warm_attach_vs_mmap\": %.2f,\n", warm_ratio.median);
    printf("    \"first_attach_1MiB_vs_cma\": %.2f,\n", one.ratio.median);
    printf("    \"first_attach_64MiB_vs_cma\": %.2f\n", sixty_four.ratio.median);
    printf("  },\n  \"spread\": {\n");
    print_spread("warm_attach_vs_mmap", warm_ratio, false);
    print_spread("first_attach_1MiB_vs_cma", one.ratio, false);
    print_spread("first_attach_64MiB_vs_cma", sixty_four.ratio, true);
    printf("  }\n}\n");
    return 0;
}
