/* A bounded soak: exporters, read-only and read-write importers and the broker itself killed with
 * SIGKILL at random points while importers attach, read and write, for CHAOS_ROUNDS rounds
 * (CHAOS_SEED picks the sequence; it is printed so that a failure can be replayed).
 *
 * After each round it checks what must survive any of those deaths:
 * - no hang: every process still alive answers and exits within its deadline;
 * - no byte lost: every live exporter's buffer holds exactly what it wrote, except the one page each
 *   read-write importer may write, whose bytes are each the exporter's or that importer's mark, and
 *   every importer read the exporter's bytes on every pass;
 * - every importer told: a fresh get and attach succeed exactly when its exporter lived through the
 *   round, and fail with an error otherwise (never hang, never crash); a broker killed and started
 *   again changes nothing there, since exporters register their segments again under the same ids;
 * - nothing leaked in the broker: its clients, segments, grants and attachments return to zero and
 *   its open descriptors to what it had before the round. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "test_report.h"
#include "xpmem.h"

#define EXPORTERS 2
#define IMPORTERS 4 /* importer k uses exporter k % EXPORTERS; odd k are read-only */
#define BUFFER_SIZE (UINT64_C(4) << 20)
#define PAGE 4096
#define LINE 512
#define STEP_TIMEOUT_MS 15000

static struct broker broker;
static const char *xpmemd;

/* Page k + 1 of an exporter's buffer is importer k's to write (importers of other exporters leave it). */
static uint8_t mark_of(int importer) { return (uint8_t)(0xA0 + importer); }
static bool is_mark_page(size_t page) { return page >= 1 && page <= IMPORTERS; }

/* ---------------------------------------------------------------------------------------------
 * The exporter: a buffer filled with its seed, its whole address space exported. "verify" answers
 * "intact" or where a byte was lost. */

static int exporter(int in, int out, void *argument)
{
    unsigned seed = (unsigned)(uintptr_t)argument;
    uint8_t *buffer = mmap(NULL, BUFFER_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buffer == MAP_FAILED)
        return 2;
    pattern_fill(buffer, BUFFER_SIZE, seed);
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    if (segid < 0) {
        say(out, "error make %s", strerror(errno));
        return 2;
    }
    say(out, "ready %lld %lu", (long long)segid, (unsigned long)(uintptr_t)buffer);
    char line[LINE];
    while (hear(in, line, sizeof line) && strcmp(line, "quit") != 0) {
        /* A mark page's bytes are each the exporter's or the importer's mark (an importer killed in
         * the middle of writing leaves part of its page written); every other byte is the exporter's. */
        long lost = -1;
        for (size_t index = 0; index < BUFFER_SIZE && lost < 0; index++) {
            size_t page = index / PAGE;
            if (buffer[index] != pattern_byte(index, seed)
                && !(is_mark_page(page) && buffer[index] == mark_of((int)page - 1)))
                lost = (long)index;
        }
        if (lost < 0)
            say(out, "intact");
        else
            say(out, "lost at %ld", lost);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The importer: attaches its exporter's buffer and, until "stop", reads every page outside the mark
 * pages (they must hold the exporter's bytes) and, read-write, writes its mark page. Then it tries a
 * fresh get and attach and answers "done PASSES BAD fresh ok|failed ERRNO". */

struct import_plan {
    xpmem_segid_t segid;
    uintptr_t address;
    unsigned seed;
    int index;
};

static bool read_only_importer(int index) { return index % 2 == 1; }

static uint8_t *attach_buffer(const struct import_plan *plan, xpmem_apid_t *apid)
{
    *apid = xpmem_get(plan->segid, read_only_importer(plan->index) ? XPMEM_RDONLY : XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    if (*apid < 0)
        return NULL;
    struct xpmem_addr where = {.apid = *apid, .offset = (off_t)plan->address};
    uint8_t *window = xpmem_attach(where, BUFFER_SIZE, NULL);
    return window == (void *)-1 ? NULL : window;
}

static bool stop_requested(int in)
{
    struct pollfd readable = {.fd = in, .events = POLLIN};
    return poll(&readable, 1, 0) > 0;
}

static int importer(int in, int out, void *argument)
{
    const struct import_plan *plan = argument;
    xpmem_apid_t apid;
    volatile uint8_t *window = attach_buffer(plan, &apid);
    if (window == NULL) {
        say(out, "error attach %s", strerror(errno));
        return 2;
    }
    say(out, "attached");
    long passes = 0, bad = 0;
    while (!stop_requested(in)) {
        for (size_t page = 0; page < BUFFER_SIZE / PAGE; page += 7) {
            if (is_mark_page(page))
                continue;
            if (window[page * PAGE + 5] != pattern_byte(page * PAGE + 5, plan->seed))
                bad++;
        }
        if (!read_only_importer(plan->index))
            memset((void *)(window + (size_t)(plan->index + 1) * PAGE), mark_of(plan->index), PAGE);
        passes++;
    }
    char line[LINE];
    if (!hear(in, line, sizeof line) || strcmp(line, "stop") != 0)
        return 3;
    xpmem_apid_t fresh_apid;
    uint8_t *fresh = attach_buffer(plan, &fresh_apid);
    int error = errno;
    bool fresh_ok = fresh != NULL && pattern_check(fresh, PAGE, plan->seed) < 0;
    say(out, "done %ld %ld fresh %s %d", passes, bad, fresh_ok ? "ok" : "failed", fresh_ok ? 0 : error);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The runner. */

enum action { NOTHING, KILL_EXPORTER, KILL_IMPORTER, KILL_BROKER, ACTION_COUNT };
static const char *action_names[] = {"nothing killed", "an exporter killed", "an importer killed", "the broker killed"};

struct round {
    struct child exporters[EXPORTERS];
    bool exporter_alive[EXPORTERS];
    struct import_plan plans[IMPORTERS];
    struct child importers[IMPORTERS];
    bool importer_alive[IMPORTERS];
    bool broker_killed;
    char why[1024];
};

static void fail_with(struct round *round, const char *format, const char *detail)
{
    if (round->why[0] == '\0')
        snprintf(round->why, sizeof round->why, format, detail);
}

static bool start_processes(struct round *round, unsigned round_number)
{
    char line[LINE];
    for (int index = 0; index < EXPORTERS; index++) {
        unsigned seed = round_number * 16 + (unsigned)index + 1;
        long long segid;
        unsigned long address;
        round->exporter_alive[index] = child_start(&round->exporters[index], exporter, (void *)(uintptr_t)seed) == 0;
        if (!round->exporter_alive[index] || !child_read_line(&round->exporters[index], line, sizeof line, STEP_TIMEOUT_MS)
            || sscanf(line, "ready %lld %lu", &segid, &address) != 2) {
            fail_with(round, "an exporter did not start: '%s'", line);
            return false;
        }
        for (int importer_index = index; importer_index < IMPORTERS; importer_index += EXPORTERS)
            round->plans[importer_index] = (struct import_plan){.segid = segid, .address = address, .seed = seed,
                                                                .index = importer_index};
    }
    for (int index = 0; index < IMPORTERS; index++) {
        round->importer_alive[index] = child_start(&round->importers[index], importer, &round->plans[index]) == 0;
        if (!round->importer_alive[index] || !child_read_line(&round->importers[index], line, sizeof line, STEP_TIMEOUT_MS)
            || strcmp(line, "attached") != 0) {
            fail_with(round, "an importer did not attach: '%s'", line);
            return false;
        }
    }
    return true;
}

static void act(struct round *round, enum action action)
{
    switch (action) {
    case KILL_EXPORTER: {
        int victim = rand() % EXPORTERS;
        kill(round->exporters[victim].pid, SIGKILL);
        child_wait(&round->exporters[victim], STEP_TIMEOUT_MS);
        round->exporter_alive[victim] = false;
        break;
    }
    case KILL_IMPORTER: {
        int victim = rand() % IMPORTERS;
        kill(round->importers[victim].pid, SIGKILL);
        child_wait(&round->importers[victim], STEP_TIMEOUT_MS);
        round->importer_alive[victim] = false;
        break;
    }
    case KILL_BROKER:
        kill(broker.pid, SIGKILL);
        waitpid(broker.pid, NULL, 0);
        broker.pid = 0;
        round->broker_killed = true;
        if (broker_restart(&broker, xpmemd) < 0)
            fail_with(round, "%s", "the broker did not start again on the same socket");
        break;
    default:
        break;
    }
}

/* Importers report; each must have read the exporter's bytes every time, and its fresh attach must
 * succeed exactly when its exporter lived (the broker's death and restart notwithstanding). */
static void check_importers(struct round *round)
{
    char line[LINE];
    for (int index = 0; index < IMPORTERS; index++) {
        if (!round->importer_alive[index])
            continue;
        child_send(&round->importers[index], "stop");
        long passes, bad;
        char fresh[16];
        int error;
        if (!child_read_line(&round->importers[index], line, sizeof line, STEP_TIMEOUT_MS)
            || sscanf(line, "done %ld %ld fresh %15s %d", &passes, &bad, fresh, &error) != 4) {
            fail_with(round, "an importer did not finish (hang?): '%s'", line);
            continue;
        }
        int exporter = index % EXPORTERS;
        bool expect_fresh = round->exporter_alive[exporter];
        if (bad != 0 || passes == 0)
            fail_with(round, "an importer read wrong bytes: '%s'", line);
        else if (expect_fresh != (strcmp(fresh, "ok") == 0))
            fail_with(round, expect_fresh ? "a fresh attach failed although its exporter lived: '%s'"
                                          : "a fresh attach succeeded after its exporter died: '%s'",
                      line);
    }
}

static void check_exporters(struct round *round)
{
    char line[LINE];
    for (int index = 0; index < EXPORTERS; index++) {
        if (!round->exporter_alive[index])
            continue;
        child_send(&round->exporters[index], "verify");
        if (!child_read_line(&round->exporters[index], line, sizeof line, STEP_TIMEOUT_MS) || strcmp(line, "intact") != 0)
            fail_with(round, "an exporter's memory: '%s'", line);
    }
}

static void finish_processes(struct round *round)
{
    for (int index = 0; index < IMPORTERS; index++)
        if (round->importer_alive[index] && child_wait(&round->importers[index], STEP_TIMEOUT_MS) != 0)
            fail_with(round, "%s", "an importer did not exit cleanly");
    for (int index = 0; index < EXPORTERS; index++) {
        if (!round->exporter_alive[index])
            continue;
        child_send(&round->exporters[index], "quit");
        if (child_wait(&round->exporters[index], STEP_TIMEOUT_MS) != 0)
            fail_with(round, "%s", "an exporter did not exit cleanly");
    }
}

/* The broker forgets the round's processes as it notices them go: give it time (a busy machine). */
static void check_broker_clean(struct round *round, uint32_t baseline_descriptors)
{
    struct broker_status status = {0};
    for (int attempt = 0; attempt < 2000; attempt++) {
        /* The one client is this status request. */
        if (broker_query_status(broker.socket, &status) == 0 && status.clients <= 1 && status.segments == 0
            && status.grants == 0 && status.attachments == 0 && status.open_descriptors <= baseline_descriptors)
            return;
        usleep(10000);
    }
    char detail[200];
    snprintf(detail, sizeof detail, "%u other clients, %u segments, %u grants, %u attachments, %u descriptors (before: %u)",
             status.clients > 0 ? status.clients - 1 : 0, status.segments, status.grants, status.attachments, status.open_descriptors,
             baseline_descriptors);
    fail_with(round, "the broker kept records or descriptors: %s", detail);
}

static uint32_t broker_descriptors(void)
{
    struct broker_status status = {0};
    broker_query_status(broker.socket, &status);
    return status.open_descriptors;
}

int main(void)
{
    xpmemd = broker_start_for_tests(&broker, "XPMEMD");
    if (xpmemd == NULL)
        return report_setup_failure("no broker to soak");
    const char *rounds_text = getenv("CHAOS_ROUNDS"), *seed_text = getenv("CHAOS_SEED");
    int rounds = rounds_text != NULL ? atoi(rounds_text) : 8;
    unsigned seed = seed_text != NULL ? (unsigned)strtoul(seed_text, NULL, 10) : (unsigned)time(NULL);
    srand(seed);
    printf("   (chaos: %d rounds, CHAOS_SEED=%u)\n", rounds, seed);
    for (int number = 1; number <= rounds; number++) {
        struct round round = {0};
        /* Every action in turn, at a random moment. */
        enum action action = (enum action)((number - 1) % ACTION_COUNT);
        uint32_t baseline = broker_descriptors();
        if (start_processes(&round, (unsigned)number)) {
            usleep((useconds_t)(rand() % 40000));
            act(&round, action);
            if (round.broker_killed)
                baseline = broker_descriptors();
            usleep(20000);
            check_importers(&round);
            check_exporters(&round);
        }
        finish_processes(&round);
        for (int index = 0; index < IMPORTERS; index++)
            if (round.importer_alive[index])
                child_kill(&round.importers[index]);
        check_broker_clean(&round, baseline);
        char name[96];
        snprintf(name, sizeof name, "chaos round %d (%s)", number, action_names[action]);
        report(name, round.why[0] == '\0', "%s (CHAOS_SEED=%u)", round.why, seed);
    }
    broker_stop(&broker);
    return report_totals();
}
