/* Integration tests of libxpmem.so with a real broker and real processes. Every process that uses
 * the library is forked from this runner before any library use, and driven over pipes; the runner
 * itself only talks to the broker for status. */
#include <dirent.h>
#include <grp.h>
#include <poll.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "channel.h"
#include "harness.h"
#include "test_report.h"
#include "wire.h"
#include "xpmem.h"

#define PAGE 4096UL
#define LINE 4096
#define STEP_TIMEOUT_MS 15000

static struct broker broker;

/* Exported static memory: .data (initialised) and .bss (zero). */
static uint8_t data_buffer[5 * PAGE + 123] = {1, 2, 3};
static uint8_t bss_buffer[9 * PAGE + 77];

static uintptr_t page_start(uintptr_t address) { return address & ~(PAGE - 1); }
static size_t page_span(uintptr_t address, size_t length)
{
    return ((address + length + PAGE - 1) & ~(PAGE - 1)) - page_start(address);
}

/* ---------------------------------------------------------------------------------------------
 * Exporter role: exports its whole address space and a buffer of the asked kind, then serves
 * "check SEED" (are my bytes that pattern?), "fill SEED" and "quit". */

struct export_request {
    const char *kind;
    size_t size;
};

/* Grows the main stack well below the caller's frame, so its lowest page (never exported) is far
 * from the buffer under test. */
static __attribute__((noinline)) void deepen_stack(void)
{
    volatile uint8_t room[512 * 1024];
    for (size_t index = 0; index < sizeof room; index += PAGE)
        room[index] = 1;
}

static int serve_buffer(int in, int out, volatile uint8_t *buffer, size_t size)
{
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    if (segid < 0) {
        say(out, "error make %s", strerror(errno));
        return 2;
    }
    say(out, "ready %lld %lu %zu", (long long)segid, (unsigned long)(uintptr_t)buffer, size);
    char line[LINE];
    while (hear(in, line, sizeof line)) {
        unsigned seed;
        if (sscanf(line, "check %u", &seed) == 1) {
            long bad = pattern_check(buffer, size, seed);
            if (bad < 0)
                say(out, "ok");
            else
                say(out, "bad at %ld: %u", bad, buffer[bad]);
        } else if (sscanf(line, "fill %u", &seed) == 1) {
            pattern_fill(buffer, size, seed);
            say(out, "ok");
        } else if (strcmp(line, "remove-segment") == 0) {
            say(out, xpmem_remove(segid) == 0 ? "removed" : "remove failed");
        } else if (strcmp(line, "exit-without-remove") == 0) {
            _exit(0);
        } else {
            break;
        }
    }
    return 0;
}

static int exporter(int in, int out, void *argument)
{
    const struct export_request *request = argument;
    volatile uint8_t stack_buffer[3 * PAGE + 500];
    deepen_stack();
    volatile uint8_t *buffer;
    size_t size = request->size;
    if (strcmp(request->kind, "stack") == 0) {
        buffer = stack_buffer + 100;
        size = sizeof stack_buffer - 100;
    } else if (strcmp(request->kind, "data") == 0) {
        buffer = data_buffer + 7;
        size = sizeof data_buffer - 7;
    } else if (strcmp(request->kind, "bss") == 0) {
        buffer = bss_buffer + 3;
        size = sizeof bss_buffer - 3;
    } else if (strcmp(request->kind, "mmap") == 0) {
        buffer = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    } else {
        buffer = malloc(size); /* heap-small: brk heap; heap-large: glibc's own mmap */
    }
    pattern_fill(buffer, size, 1);
    return serve_buffer(in, out, buffer, size);
}

/* ---------------------------------------------------------------------------------------------
 * Importer role: attaches the exporter's buffer read-write and follows the runner's script. */

struct import_request {
    xpmem_segid_t segid;
    uintptr_t address;
    size_t size;
};

/* xpmem_get of the request's segment with `flags`, then xpmem_attach of the page span around its
 * buffer; the window, or NULL with errno (apid set either way, -1 when the get failed). */
static uint8_t *attach_request(const struct import_request *request, int flags, xpmem_apid_t *apid)
{
    *apid = xpmem_get(request->segid, flags, XPMEM_PERMIT_MODE, NULL);
    struct xpmem_addr where = {.apid = *apid, .offset = (off_t)page_start(request->address)};
    uint8_t *window = xpmem_attach(where, page_span(request->address, request->size), NULL);
    return window == (void *)-1 ? NULL : window;
}

/* attach_request read-only; when it fails, says "attach failed: …" on `out` and returns NULL. */
static uint8_t *attach_read_only_or_say(const struct import_request *request, int out)
{
    xpmem_apid_t apid;
    uint8_t *window = attach_request(request, XPMEM_RDONLY, &apid);
    if (window == NULL)
        say(out, "attach failed: %s", strerror(errno));
    return window;
}

static int importer(int in, int out, void *argument)
{
    const struct import_request *request = argument;
    xpmem_apid_t apid = xpmem_get(request->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    if (apid < 0) {
        say(out, "error get %s", strerror(errno));
        return 2;
    }
    struct xpmem_addr where = {.apid = apid, .offset = (off_t)page_start(request->address)};
    uint8_t *window = xpmem_attach(where, page_span(request->address, request->size), NULL);
    if (window == (void *)-1) {
        say(out, "error attach %s", strerror(errno));
        return 3;
    }
    volatile uint8_t *view = window + (request->address - page_start(request->address));
    long bad = pattern_check(view, request->size, 1);
    if (bad >= 0) {
        say(out, "bad exporter bytes at %ld", bad);
        return 4;
    }
    pattern_fill(view, request->size, 2);
    say(out, "wrote 2");
    char line[LINE];
    if (!hear(in, line, sizeof line) || strcmp(line, "check 3") != 0)
        return 5;
    bad = pattern_check(view, request->size, 3);
    say(out, bad < 0 ? "ok" : "bad at %ld", bad);
    xpmem_detach(window);
    xpmem_release(apid);
    return bad < 0 ? 0 : 6;
}

static bool parse_ready(const char *line, xpmem_segid_t *segid, uintptr_t *address, size_t *size)
{
    long long id;
    unsigned long at;
    size_t length;
    if (sscanf(line, "ready %lld %lu %zu", &id, &at, &length) != 3)
        return false;
    *segid = id;
    *address = at;
    *size = length;
    return true;
}

/* Reads the exporter's "ready" line into `request`; when it does not come, reports the test failed
 * and ends the exporter. */
static bool exporter_ready(struct child *exporting, const char *name, struct import_request *request)
{
    char line[LINE] = "";
    if (child_read_line(exporting, line, sizeof line, STEP_TIMEOUT_MS)
        && parse_ready(line, &request->segid, &request->address, &request->size))
        return true;
    report(name, false, "exporter said '%s'", line);
    child_kill(exporting);
    return false;
}

static void test_memory_kind(const char *kind, size_t size)
{
    char name[128];
    snprintf(name, sizeof name, "%s memory is seen and written both ways", kind);
    struct export_request export_request = {.kind = kind, .size = size};
    struct child exporting, importing;
    char line[LINE];
    if (child_start(&exporting, exporter, &export_request) < 0) {
        report(name, false, "fork");
        return;
    }
    struct import_request import_request;
    if (!exporter_ready(&exporting, name, &import_request))
        return;
    child_start(&importing, importer, &import_request);
    bool ok = child_read_line(&importing, line, sizeof line, STEP_TIMEOUT_MS) && strcmp(line, "wrote 2") == 0;
    char why[LINE + 64] = "";
    if (!ok)
        snprintf(why, sizeof why, "importer: %s", line);
    if (ok) {
        child_send(&exporting, "check 2");
        ok = child_read_line(&exporting, line, sizeof line, STEP_TIMEOUT_MS) && strcmp(line, "ok") == 0;
        if (!ok)
            snprintf(why, sizeof why, "exporter does not see the importer's writes: %s", line);
    }
    if (ok) {
        child_send(&exporting, "fill 3");
        child_read_line(&exporting, line, sizeof line, STEP_TIMEOUT_MS);
        child_send(&importing, "check 3");
        ok = child_read_line(&importing, line, sizeof line, STEP_TIMEOUT_MS) && strcmp(line, "ok") == 0;
        if (!ok)
            snprintf(why, sizeof why, "importer does not see the exporter's later writes: %s", line);
    }
    int importer_status = child_wait(&importing, STEP_TIMEOUT_MS);
    child_send(&exporting, "quit");
    int exporter_status = child_wait(&exporting, STEP_TIMEOUT_MS);
    report(name, ok && importer_status == 0 && exporter_status == 0, "%s (importer exit %d, exporter exit %d)", why,
           importer_status, exporter_status);
}

/* ---------------------------------------------------------------------------------------------
 * Faults: touching a hole, writing a read-only attachment. */

/* Five pages: data, unmapped, data, PROT_NONE, data. */
static int holey_exporter(int in, int out, void *argument)
{
    (void)argument;
    uint8_t *pages = mmap(NULL, 5 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pattern_fill(pages, 5 * PAGE, 1);
    munmap(pages + PAGE, PAGE);
    mprotect(pages + 3 * PAGE, PAGE, PROT_NONE);
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    say(out, "ready %lld %lu %lu", (long long)segid, (unsigned long)(uintptr_t)pages, 5 * PAGE);
    char line[LINE];
    while (hear(in, line, sizeof line)) {
        if (strcmp(line, "check-last-page") == 0)
            say(out, pages[4 * PAGE + 9] == 0x5A ? "ok" : "bad %u", pages[4 * PAGE + 9]);
        else
            break;
    }
    return 0;
}

static int holey_importer(int in, int out, void *argument)
{
    (void)in;
    const struct import_request *request = argument;
    xpmem_apid_t apid = xpmem_get(request->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    struct xpmem_addr where = {.apid = apid, .offset = (off_t)request->address};
    volatile uint8_t *window = xpmem_attach(where, 5 * PAGE, NULL);
    if (window == (void *)-1) {
        say(out, "attach failed: %s", strerror(errno));
        return 2;
    }
    bool data_ok = true;
    for (int page = 0; page < 5; page += 2)
        for (size_t index = 0; index < PAGE; index++)
            data_ok = data_ok && window[page * PAGE + index] == pattern_byte(page * PAGE + index, 1);
    int unmapped_hole = touch_and_catch(window + PAGE + 17, false);
    int protected_hole = touch_and_catch(window + 3 * PAGE, false);
    int data_page = touch_and_catch(window + 4 * PAGE + 9, true); /* writes 0x5A */
    say(out, "data %d unmapped %d protnone %d write %d", data_ok, unmapped_hole, protected_hole, data_page);
    return 0;
}

static void test_window_with_holes(void)
{
    const char *name = "a window spanning holes attaches; holes raise SIGBUS, data around them is live";
    struct child exporting, importing;
    char line[LINE];
    child_start(&exporting, holey_exporter, NULL);
    struct import_request request;
    if (!exporter_ready(&exporting, name, &request))
        return;
    child_start(&importing, holey_importer, &request);
    bool got = child_read_line(&importing, line, sizeof line, STEP_TIMEOUT_MS);
    char expected[128];
    snprintf(expected, sizeof expected, "data 1 unmapped %d protnone %d write 0", SIGBUS, SIGBUS);
    bool ok = got && strcmp(line, expected) == 0;
    child_send(&exporting, "check-last-page");
    char seen[LINE];
    bool exporter_sees = child_read_line(&exporting, seen, sizeof seen, STEP_TIMEOUT_MS) && strcmp(seen, "ok") == 0;
    child_wait(&importing, STEP_TIMEOUT_MS);
    child_send(&exporting, "quit");
    child_wait(&exporting, STEP_TIMEOUT_MS);
    report(name, ok && exporter_sees, "importer: '%s' (expected '%s'); exporter after the write: %s", line, expected, seen);
}

static int read_only_importer(int in, int out, void *argument)
{
    (void)in;
    const struct import_request *request = argument;
    uint8_t *window = attach_read_only_or_say(request, out);
    if (window == NULL)
        return 2;
    size_t span = page_span(request->address, request->size);
    volatile uint8_t *view = window + (request->address - page_start(request->address));
    bool reads = pattern_check(view, request->size, 1) < 0;
    int write_signal = touch_and_catch(view, true);
    /* Made writable (it is a private mapping of the file: window_map.c), it writes copies of its own. */
    int protect_error = mprotect(window, span, PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
    int private_write_signal = protect_error == 0 ? touch_and_catch(view, true) : -1;
    say(out, "reads %d write-signal %d mprotect %s private-write-signal %d", reads, write_signal,
        protect_error == 0 ? "ok" : strerror(protect_error), private_write_signal);
    return 0;
}

static void test_read_only(void)
{
    const char *name = "a read-only get reads and faults on write; made writable with mprotect, its writes never reach "
                       "the exporter";
    struct export_request export_request = {.kind = "heap-large", .size = 1 << 20};
    struct child exporting, importing;
    char line[LINE];
    child_start(&exporting, exporter, &export_request);
    struct import_request request;
    if (!exporter_ready(&exporting, name, &request))
        return;
    child_start(&importing, read_only_importer, &request);
    child_read_line(&importing, line, sizeof line, STEP_TIMEOUT_MS);
    char expected[128];
    snprintf(expected, sizeof expected, "reads 1 write-signal %d mprotect ok private-write-signal 0", SIGSEGV);
    child_wait(&importing, STEP_TIMEOUT_MS);
    child_send(&exporting, "check 1");
    char unchanged[LINE];
    child_read_line(&exporting, unchanged, sizeof unchanged, STEP_TIMEOUT_MS);
    child_send(&exporting, "quit");
    child_wait(&exporting, STEP_TIMEOUT_MS);
    report(name, strcmp(line, expected) == 0 && strcmp(unchanged, "ok") == 0,
           "importer: '%s' (expected '%s'); exporter's bytes: %s", line, expected, unchanged);
}

/* ---------------------------------------------------------------------------------------------
 * Error paths. */

static int error_paths(int in, int out, void *argument)
{
    (void)in;
    const struct import_request *request = argument; /* a live exporter's segment */
    char failures[LINE] = "";
    size_t used = 0;
#define EXPECT(condition, label)                                                                   \
    do {                                                                                           \
        errno = 0;                                                                                 \
        bool passed_ = (condition);                                                                \
        if (!passed_)                                                                              \
            used += (size_t)snprintf(failures + used, sizeof failures - used, "%s (errno %s); ",  \
                                     label, strerror(errno));                                      \
    } while (0)

    EXPECT(xpmem_get(0x7123456789ABCDEF, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL) == -1 && errno == ENOENT,
           "get of an unknown segid is ENOENT");
    EXPECT(xpmem_get(-4, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL) == -1 && errno == EINVAL, "get of a negative segid is EINVAL");
    EXPECT(xpmem_get(request->segid, 0x7, XPMEM_PERMIT_MODE, NULL) == -1 && errno == EINVAL, "get with bad flags is EINVAL");
    EXPECT(xpmem_get(request->segid, XPMEM_RDWR, 0x9, NULL) == -1 && errno == EINVAL, "get with a bad permit type is EINVAL");
    struct xpmem_addr bogus = {.apid = 0x5555, .offset = 0};
    EXPECT(xpmem_attach(bogus, PAGE, NULL) == (void *)-1 && errno == EINVAL, "attach with an unknown apid is EINVAL");
    xpmem_apid_t apid = xpmem_get(request->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    EXPECT(apid > 0, "get of a live segment succeeds");
    struct xpmem_addr unaligned = {.apid = apid, .offset = (off_t)page_start(request->address) + 8};
    EXPECT(xpmem_attach(unaligned, PAGE, NULL) == (void *)-1 && errno == EINVAL, "attach at an unaligned offset is EINVAL");
    struct xpmem_addr aligned = {.apid = apid, .offset = (off_t)page_start(request->address)};
    EXPECT(xpmem_attach(aligned, 0, NULL) == (void *)-1 && errno == EINVAL, "attach of size 0 is EINVAL");
    EXPECT(xpmem_attach(aligned, PAGE, (void *)0x1001) == (void *)-1 && errno == EINVAL,
           "attach at an unaligned vaddr is EINVAL");
    int local;
    EXPECT(xpmem_detach(&local) == -1 && errno == EINVAL, "detach of a non-attached address is EINVAL");
    void *window = xpmem_attach(aligned, PAGE, NULL);
    EXPECT(window != (void *)-1, "attach of a live range succeeds");
    EXPECT(xpmem_detach(window) == 0, "detach succeeds");
    EXPECT(xpmem_detach(window) == -1 && errno == EINVAL, "a second detach is EINVAL");
    EXPECT(xpmem_release(apid) == 0, "release succeeds");
    EXPECT(xpmem_attach(aligned, PAGE, NULL) == (void *)-1 && errno == EINVAL, "attach after release is EINVAL");
    EXPECT(xpmem_release(apid) == -1 && errno == EINVAL, "a second release is EINVAL");
    EXPECT(xpmem_remove(0x7123456789ABCDEF) == -1 && errno == ENOENT, "remove of an unknown segid is ENOENT");
    EXPECT(xpmem_remove(request->segid) == -1, "remove of another process's segment fails");
    EXPECT(xpmem_remove(-1) == -1 && errno == EINVAL, "remove of -1 is EINVAL");
    EXPECT(xpmem_make((void *)0x1234, PAGE, XPMEM_PERMIT_MODE, (void *)0600) == -1 && errno == EINVAL,
           "make at an unaligned address is EINVAL");
    EXPECT(xpmem_make(0, 100, XPMEM_PERMIT_MODE, (void *)0600) == -1 && errno == EINVAL, "make of an unaligned size is EINVAL");
    EXPECT(xpmem_make(0, XPMEM_MAXADDR_SIZE, 0x2, (void *)0600) == -1 && errno == EINVAL, "make with a bad permit type is EINVAL");
    EXPECT(xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)01000) == -1 && errno == EINVAL,
           "make with bits beyond 0777 is EINVAL");
    xpmem_segid_t mine = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    EXPECT(mine > 0 && xpmem_remove(mine) == 0, "make and remove of one's own segment succeed");
    EXPECT(xpmem_remove(mine) == -1 && errno == ENOENT, "a second remove is ENOENT");
    say(out, "%s", used == 0 ? "all ok" : failures);
    return 0;
#undef EXPECT
}

static void test_error_paths(void)
{
    const char *name = "every error path returns -1 with errno set";
    struct export_request export_request = {.kind = "mmap", .size = 4 * PAGE};
    struct child exporting, checking;
    char line[LINE];
    child_start(&exporting, exporter, &export_request);
    struct import_request request;
    if (!exporter_ready(&exporting, name, &request))
        return;
    child_start(&checking, error_paths, &request);
    bool got = child_read_line(&checking, line, sizeof line, STEP_TIMEOUT_MS);
    int status = child_wait(&checking, STEP_TIMEOUT_MS);
    child_send(&exporting, "quit");
    child_wait(&exporting, STEP_TIMEOUT_MS);
    report(name, got && strcmp(line, "all ok") == 0 && status == 0, "%s (exit %d)", got ? line : "no answer", status);
}

static int without_broker(int in, int out, void *argument)
{
    (void)in;
    (void)argument;
    setenv("XPMEM_SOCKET", "/nonexistent-xpmem-dir/xpmemd.sock", 1);
    setenv("XPMEM_AUTOSTART", "0", 1);
    setenv("XPMEM_DEBUG", "1", 1);
    /* Capture our own diagnostics. */
    int pipe_ends[2];
    if (pipe(pipe_ends) < 0)
        return 2;
    dup2(pipe_ends[1], STDERR_FILENO);
    int version = xpmem_version();
    int init = xpmem_init();
    int init_errno = errno;
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    close(STDERR_FILENO);
    close(pipe_ends[1]);
    char diagnostics[4096] = "";
    ssize_t got = read(pipe_ends[0], diagnostics, sizeof diagnostics - 1);
    diagnostics[got > 0 ? got : 0] = '\0';
    bool explained = strstr(diagnostics, "XPMEM_AUTOSTART=0") != NULL;
    say(out, "version %d init %d %s make %lld explained %d", version, init, init_errno == ENOENT ? "ENOENT" : strerror(init_errno),
        (long long)segid, explained);
    return 0;
}

static void test_without_broker(void)
{
    const char *name = "no broker and XPMEM_AUTOSTART=0: xpmem_version() is -1 and XPMEM_DEBUG=1 says why";
    struct child checking;
    char line[LINE] = "";
    child_start(&checking, without_broker, NULL);
    child_read_line(&checking, line, sizeof line, STEP_TIMEOUT_MS);
    child_wait(&checking, STEP_TIMEOUT_MS);
    report(name, strcmp(line, "version -1 init -1 ENOENT make -1 explained 1") == 0, "%s", line);
}

/* ---------------------------------------------------------------------------------------------
 * Lifecycle: an exporter that exits without remove leaves nothing in the broker. */

static bool wait_for_empty_broker(struct broker_status *status)
{
    for (int attempt = 0; attempt < 300; attempt++) {
        if (broker_query_status(broker.socket, status) == 0 && status->segments == 0 && status->grants == 0
            && status->attachments == 0)
            return true;
        usleep(10000);
    }
    return false;
}

static int attach_and_wait(int in, int out, void *argument)
{
    const struct import_request *request = argument;
    xpmem_apid_t apid = xpmem_get(request->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    struct xpmem_addr where = {.apid = apid, .offset = (off_t)page_start(request->address)};
    void *window = xpmem_attach(where, page_span(request->address, request->size), NULL);
    say(out, window == (void *)-1 ? "attach failed" : "attached");
    char line[LINE];
    hear(in, line, sizeof line);
    /* The exporter is gone: its pages stay readable here, but no new attach may succeed (not
     * even from what this process remembered of the segment). */
    bool still_readable = pattern_check((volatile uint8_t *)window + (request->address - page_start(request->address)),
                                        request->size, 1) < 0;
    errno = 0;
    void *again = xpmem_attach(where, page_span(request->address, request->size), NULL);
    say(out, "readable %d attach-again %s", still_readable, again == (void *)-1 ? strerror(errno) : "succeeded");
    hear(in, line, sizeof line);
    return 0; /* no detach, no release either */
}

static void test_exit_without_remove(void)
{
    const char *name = "processes that exit without remove, detach or release leave nothing in the broker; no attach after the exporter left";
    struct export_request export_request = {.kind = "heap-small", .size = 3000};
    struct child exporting, importing;
    char line[LINE];
    child_start(&exporting, exporter, &export_request);
    struct import_request request;
    if (!exporter_ready(&exporting, name, &request))
        return;
    child_start(&importing, attach_and_wait, &request);
    child_read_line(&importing, line, sizeof line, STEP_TIMEOUT_MS);
    struct broker_status during = {0}, after = {0};
    broker_query_status(broker.socket, &during);
    bool attached = strcmp(line, "attached") == 0;
    child_send(&exporting, "exit-without-remove");
    child_wait(&exporting, STEP_TIMEOUT_MS);
    for (int attempt = 0; attempt < 300 && (broker_query_status(broker.socket, &after) < 0 || after.segments > 0); attempt++)
        usleep(10000);
    usleep(50000); /* the importer's event thread hears `released` */
    child_send(&importing, "attach-again");
    char again[LINE] = "";
    child_read_line(&importing, again, sizeof again, STEP_TIMEOUT_MS);
    child_send(&importing, "exit");
    child_wait(&importing, STEP_TIMEOUT_MS);
    bool empty = wait_for_empty_broker(&after);
    bool refused = strncmp(again, "readable 1 attach-again ", 24) == 0 && strstr(again, "succeeded") == NULL;
    report(name, attached && during.segments >= 1 && during.attachments >= 1 && refused && empty,
           "importer: %s, then '%s'; during: %u segments %u attachments; after: %u segments, %u grants, %u attachments",
           attached ? "attached" : "not attached", again, during.segments, during.attachments, after.segments,
           after.grants, after.attachments);
}

/* ---------------------------------------------------------------------------------------------
 * The broker killed and started again: exporters register their segments again under the same
 * ids, importers' windows keep working, and their permits attach again. */

static int attach_across_restart(int in, int out, void *argument)
{
    const struct import_request *request = argument;
    xpmem_apid_t apid;
    uint8_t *window = attach_request(request, XPMEM_RDWR, &apid);
    if (window == NULL) {
        say(out, "attach failed: %s", strerror(errno));
        return 2;
    }
    struct xpmem_addr where = {.apid = apid, .offset = (off_t)page_start(request->address)};
    size_t span = page_span(request->address, request->size);
    size_t lead = request->address - page_start(request->address);
    say(out, "attached");
    char line[LINE];
    if (!hear(in, line, sizeof line))
        return 3;
    /* The broker was killed and another started meanwhile. */
    bool window_reads = pattern_check(window + lead, request->size, 1) < 0;
    pattern_fill(window + lead, request->size, 4);
    uint8_t *again = xpmem_attach(where, span, NULL);
    int again_error = errno;
    bool again_reads = again != (void *)-1 && pattern_check(again + lead, request->size, 4) < 0;
    xpmem_apid_t fresh_apid = xpmem_get(request->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    int fresh_error = errno;
    struct xpmem_addr fresh_where = {.apid = fresh_apid, .offset = where.offset};
    uint8_t *fresh = fresh_apid < 0 ? (void *)-1 : xpmem_attach(fresh_where, span, NULL);
    bool fresh_reads = fresh != (void *)-1 && pattern_check(fresh + lead, request->size, 4) < 0;
    say(out, "window %d old-apid %s new-get %s", window_reads,
        again_reads ? "reads" : again == (void *)-1 ? strerror(again_error) : "wrong",
        fresh_reads ? "reads" : fresh_apid < 0 ? strerror(fresh_error) : "wrong");
    hear(in, line, sizeof line);
    xpmem_detach(again);
    xpmem_detach(fresh);
    xpmem_detach(window);
    xpmem_release(fresh_apid);
    xpmem_release(apid);
    return 0;
}

static void test_broker_restart(const char *xpmemd)
{
    const char *name = "after the broker is killed and started again: the same segid comes back, windows stay shared, old and new permits attach";
    struct export_request export_request = {.kind = "heap-large", .size = 3UL << 20};
    struct child exporting, importing;
    child_start(&exporting, exporter, &export_request);
    struct import_request request;
    if (!exporter_ready(&exporting, name, &request))
        return;
    child_start(&importing, attach_across_restart, &request);
    char line[LINE] = "", result[LINE] = "", verified[LINE] = "";
    bool attached = child_read_line(&importing, line, sizeof line, STEP_TIMEOUT_MS) && strcmp(line, "attached") == 0;
    kill(broker.pid, SIGKILL);
    waitpid(broker.pid, NULL, 0);
    broker.pid = 0;
    bool restarted = broker_restart(&broker, xpmemd) == 0;
    /* The exporter comes back by itself, without a call of its own: it heard its event channel end. */
    struct broker_status status = {0};
    for (int attempt = 0; attempt < 500 && (broker_query_status(broker.socket, &status) < 0 || status.segments < 1);
         attempt++)
        usleep(10000);
    bool exporter_back = status.segments == 1;
    child_send(&importing, "go");
    child_read_line(&importing, result, sizeof result, STEP_TIMEOUT_MS);
    child_send(&exporting, "check 4");
    child_read_line(&exporting, verified, sizeof verified, STEP_TIMEOUT_MS);
    child_send(&importing, "exit");
    bool importer_exited = child_wait(&importing, STEP_TIMEOUT_MS) == 0;
    child_send(&exporting, "exit");
    child_wait(&exporting, STEP_TIMEOUT_MS);
    struct broker_status after = {0};
    bool empty = wait_for_empty_broker(&after);
    report(name,
           attached && restarted && exporter_back && strcmp(result, "window 1 old-apid reads new-get reads") == 0
               && strcmp(verified, "ok") == 0 && importer_exited && empty,
           "attached %d, restarted %d, segments after restart %u, importer '%s', exporter after the importer wrote: '%s', "
           "importer exited %d, broker empty after: %d",
           attached, restarted, status.segments, result, verified, importer_exited, empty);
}

/* An exporter that removes its segment while the broker is down: the removal succeeds, and the
 * segment does not come back with the next broker. */
static int remove_during_outage(int in, int out, void *argument)
{
    (void)argument;
    uint8_t *buffer = malloc(1 << 20);
    pattern_fill(buffer, 1 << 20, 3);
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    say(out, "made %lld", (long long)segid);
    char line[LINE];
    if (!hear(in, line, sizeof line)) /* the broker is dead now */
        return 2;
    errno = 0;
    int removed = xpmem_remove(segid);
    say(out, "removed %d %s", removed, removed == 0 ? "ok" : strerror(errno));
    hear(in, line, sizeof line);
    bool intact = pattern_check(buffer, 1 << 20, 3) < 0;
    say(out, "intact %d", intact);
    hear(in, line, sizeof line);
    return 0;
}

/* An importer that releases its permit after the exporter removed the segment: the broker forgets
 * the permit (it keeps grants on a removed segment until they are released). */
static int release_after_remove(int in, int out, void *argument)
{
    const struct import_request *request = argument;
    xpmem_apid_t apid;
    uint8_t *window = attach_request(request, XPMEM_RDWR, &apid);
    if (window != NULL)
        xpmem_detach(window);
    say(out, window != NULL ? "attached" : "attach failed");
    char line[LINE];
    if (!hear(in, line, sizeof line)) /* the exporter removed it */
        return 2;
    usleep(50000); /* the event thread hears `released` */
    say(out, "released %d", xpmem_release(apid));
    hear(in, line, sizeof line);
    return 0;
}

static void test_remove_and_release_edges(const char *xpmemd)
{
    const char *name = "xpmem_remove while the broker is down succeeds and the segment stays gone; a release after the exporter removed frees the broker's grant";
    struct child exporting;
    char line[LINE] = "", removed[LINE] = "", intact[LINE] = "";
    child_start(&exporting, remove_during_outage, NULL);
    bool made = child_read_line(&exporting, line, sizeof line, STEP_TIMEOUT_MS) && strncmp(line, "made ", 5) == 0
                && atoll(line + 5) > 0;
    kill(broker.pid, SIGKILL);
    waitpid(broker.pid, NULL, 0);
    broker.pid = 0;
    child_send(&exporting, "remove");
    child_read_line(&exporting, removed, sizeof removed, STEP_TIMEOUT_MS);
    bool restarted = broker_restart(&broker, xpmemd) == 0;
    usleep(700000); /* the exporter's reconnection thread retries every 500 ms at most */
    struct broker_status after_restart = {0};
    broker_query_status(broker.socket, &after_restart);
    child_send(&exporting, "check");
    child_read_line(&exporting, intact, sizeof intact, STEP_TIMEOUT_MS);
    child_send(&exporting, "exit");
    child_wait(&exporting, STEP_TIMEOUT_MS);

    /* The release after a remove. */
    struct export_request export_request = {.kind = "heap-small", .size = 3000};
    struct child exporter_process, importing;
    child_start(&exporter_process, exporter, &export_request);
    struct import_request request;
    if (!exporter_ready(&exporter_process, name, &request))
        return;
    child_start(&importing, release_after_remove, &request);
    char attached[LINE] = "", released[LINE] = "";
    child_read_line(&importing, attached, sizeof attached, STEP_TIMEOUT_MS);
    child_send(&exporter_process, "remove-segment");
    char removed_by_exporter[LINE] = "";
    child_read_line(&exporter_process, removed_by_exporter, sizeof removed_by_exporter, STEP_TIMEOUT_MS);
    child_send(&importing, "go");
    child_read_line(&importing, released, sizeof released, STEP_TIMEOUT_MS);
    struct broker_status while_alive = {0};
    broker_query_status(broker.socket, &while_alive);
    child_send(&importing, "exit");
    child_wait(&importing, STEP_TIMEOUT_MS);
    child_send(&exporter_process, "exit");
    child_wait(&exporter_process, STEP_TIMEOUT_MS);
    report(name,
           made && strcmp(removed, "removed 0 ok") == 0 && restarted && after_restart.segments == 0
               && strcmp(intact, "intact 1") == 0 && strcmp(attached, "attached") == 0
               && strcmp(removed_by_exporter, "removed") == 0 && strcmp(released, "released 0") == 0
               && while_alive.grants == 0,
           "made %d, '%s', restarted %d, segments after the restart %u, exporter '%s'; importer '%s', exporter '%s', "
           "'%s', grants while the importer lives %u",
           made, removed, restarted, after_restart.segments, intact, attached, removed_by_exporter, released,
           while_alive.grants);
}

/* ---------------------------------------------------------------------------------------------
 * A Swift exporter (xpmem-probe beside xpmemd) moves its segment to a fresh file after another
 * importer missed an invalidation deadline: this library's windows follow it. */

struct program_request {
    char path[512];
    const char *arguments[12];
};

/* Runs a program with the runner's pipes as its standard input and output. */
static int run_program(int in, int out, void *argument)
{
    const struct program_request *request = argument;
    dup2(in, STDIN_FILENO);
    dup2(out, STDOUT_FILENO);
    execv(request->path, (char *const *)request->arguments);
    return 127;
}

static int follow_the_move(int in, int out, void *argument)
{
    const struct import_request *request = argument;
    xpmem_apid_t apid = xpmem_get(request->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    struct xpmem_addr where = {.apid = apid, .offset = 0};
    volatile uint8_t *window = xpmem_attach(where, request->size, NULL);
    if (window == (void *)-1) {
        say(out, "attach failed: %s", strerror(errno));
        return 2;
    }
    say(out, "attached first-byte %u", window[0]);
    char line[LINE];
    while (hear(in, line, sizeof line)) {
        unsigned value;
        if (strcmp(line, "read") == 0)
            say(out, "first-byte %u", window[0]);
        else if (sscanf(line, "write %u", &value) == 1) {
            window[0] = (uint8_t)value;
            say(out, "wrote");
        } else
            break;
    }
    return 0;
}

static void test_following_a_moved_segment(const char *xpmemd)
{
    const char *name = "a window of a Swift segment follows it to its fresh file when another importer missed a deadline";
    struct program_request exporter_program = {0}, late_program = {0};
    snprintf(exporter_program.path, sizeof exporter_program.path, "%.*s/xpmem-probe",
             (int)(strrchr(xpmemd, '/') - xpmemd), xpmemd);
    if (access(exporter_program.path, X_OK) != 0) {
        report(name, false, "no %s (swift build builds it beside xpmemd)", exporter_program.path);
        return;
    }
    memcpy(late_program.path, exporter_program.path, sizeof late_program.path);
    const char *exporter_arguments[] = {exporter_program.path, "export-and-revoke", "--socket", broker.socket,
                                        "--size", "65536", "--pattern", "17", NULL};
    memcpy(exporter_program.arguments, exporter_arguments, sizeof exporter_arguments);
    struct child exporting, late, importing;
    char segid_line[LINE] = "";
    child_start(&exporting, run_program, &exporter_program);
    child_read_line(&exporting, segid_line, sizeof segid_line, STEP_TIMEOUT_MS);
    /* The probe prints ids as Swift does, in 16 hex digits. */
    struct import_request request = {.segid = (xpmem_segid_t)strtoull(segid_line, NULL, 16), .size = 65536};
    const char *late_arguments[] = {late_program.path, "late-importer", "--socket", broker.socket, segid_line, NULL};
    memcpy(late_program.arguments, late_arguments, sizeof late_arguments);
    child_start(&late, run_program, &late_program);
    child_start(&importing, follow_the_move, &request);
    char late_mapped[LINE] = "", attached[LINE] = "", outcomes[LINE] = "", seen[LINE] = "", late_seen[LINE] = "",
         exporter_seen[LINE] = "", line[LINE];
    child_read_line(&late, late_mapped, sizeof late_mapped, STEP_TIMEOUT_MS);
    child_read_line(&importing, attached, sizeof attached, STEP_TIMEOUT_MS);
    child_send(&exporting, "invalidate");
    child_read_line(&exporting, outcomes, sizeof outcomes, STEP_TIMEOUT_MS);
    usleep(100000); /* the event thread maps the new file as the event arrives, before the window ends */
    child_send(&exporting, "write 34");
    child_read_line(&exporting, line, sizeof line, STEP_TIMEOUT_MS);
    child_send(&importing, "read");
    child_read_line(&importing, seen, sizeof seen, STEP_TIMEOUT_MS);
    child_send(&late, "read");
    child_read_line(&late, late_seen, sizeof late_seen, STEP_TIMEOUT_MS);
    child_send(&importing, "write 51");
    child_read_line(&importing, line, sizeof line, STEP_TIMEOUT_MS);
    child_send(&exporting, "read");
    child_read_line(&exporting, exporter_seen, sizeof exporter_seen, STEP_TIMEOUT_MS);
    child_send(&importing, "exit");
    child_wait(&importing, STEP_TIMEOUT_MS);
    child_kill(&late);
    child_kill(&exporting);
    report(name,
           strcmp(late_mapped, "mapped first-byte 17") == 0 && strcmp(attached, "attached first-byte 17") == 0
               && strcmp(outcomes, "outcomes acked, missed deadline") == 0 && strcmp(seen, "first-byte 34") == 0
               && strcmp(late_seen, "first-byte 17") == 0 && strcmp(exporter_seen, "first-byte 51") == 0,
           "late importer '%s', this importer '%s', exporter '%s', then this importer '%s', the late one '%s', exporter '%s'",
           late_mapped, attached, outcomes, seen, late_seen, exporter_seen);
}

/* ---------------------------------------------------------------------------------------------
 * Many peers: every process attaches every other's 16 MiB heap buffer. */

#define PEERS 8
#define PEER_BUFFER (16UL << 20)
/* The last page of each buffer is a mailbox: byte `rank` is written by peer `rank`. */
#define MAILBOX (PEER_BUFFER - PAGE)

static int peer(int in, int out, void *argument)
{
    int rank = (int)(intptr_t)argument;
    uint8_t *buffer = malloc(PEER_BUFFER);
    pattern_fill(buffer, MAILBOX, 10 + (unsigned)rank);
    memset(buffer + MAILBOX, 0, PAGE);
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    say(out, "ready %lld %lu", (long long)segid, (unsigned long)(uintptr_t)buffer);
    char line[LINE];
    if (!hear(in, line, sizeof line))
        return 2;
    /* "peers SEGID ADDRESS SEGID ADDRESS ..." in rank order */
    xpmem_segid_t segids[PEERS];
    unsigned long addresses[PEERS];
    char *cursor = line + 6;
    for (int other = 0; other < PEERS; other++) {
        long long id = strtoll(cursor, &cursor, 10);
        addresses[other] = strtoul(cursor, &cursor, 10);
        segids[other] = id;
    }
    int problems = 0;
    for (int step = 1; step < PEERS; step++) {
        int other = (rank + step) % PEERS;
        xpmem_apid_t apid = xpmem_get(segids[other], XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
        struct xpmem_addr where = {.apid = apid, .offset = (off_t)page_start(addresses[other])};
        size_t span = page_span(addresses[other], PEER_BUFFER);
        uint8_t *window = xpmem_attach(where, span, NULL);
        if (window == (void *)-1) {
            say(out, "attach of %d failed: %s", other, strerror(errno));
            return 3;
        }
        volatile uint8_t *view = window + (addresses[other] - page_start(addresses[other]));
        if (pattern_check(view, MAILBOX, 10 + (unsigned)other) >= 0)
            problems++;
        view[MAILBOX + (size_t)rank] = (uint8_t)(rank + 1);
        xpmem_detach(window);
        xpmem_release(apid);
    }
    say(out, "done %d", problems);
    if (!hear(in, line, sizeof line))
        return 4;
    int missing = 0;
    for (int other = 0; other < PEERS; other++)
        if (other != rank && buffer[MAILBOX + (size_t)other] != other + 1)
            missing++;
    bool intact = pattern_check(buffer, MAILBOX, 10 + (unsigned)rank) < 0;
    say(out, "mailbox %d intact %d", missing, intact);
    return 0;
}

static void test_many_peers(void)
{
    const char *name = "8 processes attach each other's 16 MiB heap buffers, check them and write to them";
    struct child peers[PEERS];
    char line[LINE], peers_line[LINE] = "peers";
    char why[LINE + 64] = "";
    size_t used = strlen(peers_line);
    bool ok = true;
    for (int rank = 0; rank < PEERS; rank++)
        child_start(&peers[rank], peer, (void *)(intptr_t)rank);
    for (int rank = 0; rank < PEERS; rank++) {
        long long segid;
        unsigned long address;
        if (!child_read_line(&peers[rank], line, sizeof line, STEP_TIMEOUT_MS) || sscanf(line, "ready %lld %lu", &segid, &address) != 2) {
            ok = false;
            snprintf(why, sizeof why, "peer %d: %s", rank, line);
            break;
        }
        used += (size_t)snprintf(peers_line + used, sizeof peers_line - used, " %lld %lu", segid, address);
    }
    double started = now_seconds();
    for (int rank = 0; ok && rank < PEERS; rank++)
        child_send(&peers[rank], "%s", peers_line);
    for (int rank = 0; ok && rank < PEERS; rank++) {
        if (!child_read_line(&peers[rank], line, sizeof line, 30000) || strcmp(line, "done 0") != 0) {
            ok = false;
            snprintf(why, sizeof why, "peer %d: %s", rank, line);
        }
    }
    double elapsed = now_seconds() - started;
    for (int rank = 0; ok && rank < PEERS; rank++) {
        child_send(&peers[rank], "check");
        if (!child_read_line(&peers[rank], line, sizeof line, STEP_TIMEOUT_MS) || strcmp(line, "mailbox 0 intact 1") != 0) {
            ok = false;
            snprintf(why, sizeof why, "peer %d: %s", rank, line);
        }
    }
    for (int rank = 0; rank < PEERS; rank++) {
        if (ok)
            child_wait(&peers[rank], STEP_TIMEOUT_MS);
        else
            child_kill(&peers[rank]);
    }
    report(name, ok, "%s", why);
    if (ok)
        printf("   (56 attaches of 16 MiB with their checks took %.0f ms)\n", elapsed * 1e3);
}

/* ---------------------------------------------------------------------------------------------
 * Threads of the exporter keep writing while a peer attaches: none of their writes may be lost. */

#define WRITERS 2

struct writer {
    volatile uint64_t *slot;
    atomic_bool *stop;
    atomic_int *lost;
    pthread_t thread;
};

static void *keep_writing(void *argument)
{
    struct writer *writer = argument;
    uint64_t expected = 0;
    while (!atomic_load(writer->stop)) {
        /* A write lost between backing's copy and its remap shows as a slot behind our count. */
        if (*writer->slot != expected)
            atomic_fetch_add(writer->lost, 1);
        *writer->slot = ++expected;
    }
    return NULL;
}

static int busy_exporter(int in, int out, void *argument)
{
    (void)argument;
    /* Large enough that copying it takes milliseconds: a write in that time would be lost. */
    size_t size = 24UL << 20;
    uint8_t *buffer = malloc(size);
    pattern_fill(buffer, size, 1);
    atomic_bool stop = false;
    atomic_int lost = 0;
    struct writer writers[WRITERS];
    for (int index = 0; index < WRITERS; index++) {
        writers[index] = (struct writer){.slot = (volatile uint64_t *)(buffer + (size_t)index * 3 * PAGE + 64),
                                         .stop = &stop, .lost = &lost};
        *writers[index].slot = 0;
        pthread_create(&writers[index].thread, NULL, keep_writing, &writers[index]);
    }
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    say(out, "ready %lld %lu %zu", (long long)segid, (unsigned long)(uintptr_t)buffer, size);
    char line[LINE];
    hear(in, line, sizeof line);
    atomic_store(&stop, true);
    for (int index = 0; index < WRITERS; index++)
        pthread_join(writers[index].thread, NULL);
    say(out, "lost %d", atomic_load(&lost));
    return 0;
}

static int counter_watcher(int in, int out, void *argument)
{
    (void)in;
    const struct import_request *request = argument;
    xpmem_apid_t apid = xpmem_get(request->segid, XPMEM_RDONLY, XPMEM_PERMIT_MODE, NULL);
    struct xpmem_addr where = {.apid = apid, .offset = (off_t)page_start(request->address)};
    uint8_t *window = xpmem_attach(where, page_span(request->address, request->size), NULL);
    if (window == (void *)-1) {
        say(out, "attach failed: %s", strerror(errno));
        return 2;
    }
    volatile uint8_t *view = window + (request->address - page_start(request->address));
    uint64_t first[WRITERS], second[WRITERS];
    for (int index = 0; index < WRITERS; index++)
        first[index] = *(volatile uint64_t *)(view + (size_t)index * 3 * PAGE + 64);
    usleep(50000);
    int moving = 0;
    for (int index = 0; index < WRITERS; index++) {
        second[index] = *(volatile uint64_t *)(view + (size_t)index * 3 * PAGE + 64);
        moving += second[index] > first[index];
    }
    say(out, "moving %d", moving);
    return 0;
}

static void test_threads_keep_their_writes(void)
{
    const char *name = "an exporter's threads writing during backing lose no write, and importers see them live";
    struct child exporting, importing;
    char line[LINE], watched[LINE] = "";
    child_start(&exporting, busy_exporter, NULL);
    struct import_request request;
    if (!exporter_ready(&exporting, name, &request))
        return;
    child_start(&importing, counter_watcher, &request);
    child_read_line(&importing, watched, sizeof watched, STEP_TIMEOUT_MS);
    child_wait(&importing, STEP_TIMEOUT_MS);
    child_send(&exporting, "stop");
    child_read_line(&exporting, line, sizeof line, STEP_TIMEOUT_MS);
    child_wait(&exporting, STEP_TIMEOUT_MS);
    char expected[32];
    snprintf(expected, sizeof expected, "moving %d", WRITERS);
    report(name, strcmp(line, "lost 0") == 0 && strcmp(watched, expected) == 0, "exporter: %s; importer: %s", line, watched);
}

/* ---------------------------------------------------------------------------------------------
 * A segment of one buffer (not the whole address space), and several importer threads at once. */

static int range_exporter(int in, int out, void *argument)
{
    (void)argument;
    size_t size = 64 * PAGE;
    uint8_t *buffer = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pattern_fill(buffer, size, 1);
    xpmem_segid_t segid = xpmem_make(buffer, size, XPMEM_PERMIT_MODE, (void *)0666);
    say(out, "ready %lld %lu %zu", (long long)segid, (unsigned long)(uintptr_t)buffer, size);
    char line[LINE];
    hear(in, line, sizeof line);
    return 0;
}

struct attach_loop {
    xpmem_apid_t apid;
    size_t size;
    atomic_int *failures;
};

static void *attach_repeatedly(void *argument)
{
    struct attach_loop *loop = argument;
    for (int round = 0; round < 200; round++) {
        size_t page = (size_t)(round % 60);
        struct xpmem_addr where = {.apid = loop->apid, .offset = (off_t)(page * PAGE)};
        volatile uint8_t *window = xpmem_attach(where, 4 * PAGE, NULL);
        if (window == (void *)-1) {
            atomic_fetch_add(loop->failures, 1);
            continue;
        }
        for (size_t index = 0; index < 4 * PAGE; index += 512)
            if (window[index] != pattern_byte(page * PAGE + index, 1))
                atomic_fetch_add(loop->failures, 1);
        if (xpmem_detach((void *)window) != 0)
            atomic_fetch_add(loop->failures, 1);
    }
    return NULL;
}

static int threaded_importer(int in, int out, void *argument)
{
    (void)in;
    const struct import_request *request = argument;
    xpmem_apid_t apid = xpmem_get(request->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    /* Offsets are relative to the segment's base (the buffer), not addresses. */
    struct xpmem_addr whole = {.apid = apid, .offset = 0};
    volatile uint8_t *window = xpmem_attach(whole, request->size, NULL);
    bool whole_ok = window != (void *)-1 && pattern_check(window, request->size, 1) < 0;
    struct xpmem_addr beyond = {.apid = apid, .offset = (off_t)request->size};
    bool beyond_refused = xpmem_attach(beyond, PAGE, NULL) == (void *)-1;
    atomic_int failures = 0;
    pthread_t threads[4];
    struct attach_loop loop = {.apid = apid, .size = request->size, .failures = &failures};
    for (int index = 0; index < 4; index++)
        pthread_create(&threads[index], NULL, attach_repeatedly, &loop);
    for (int index = 0; index < 4; index++)
        pthread_join(threads[index], NULL);
    say(out, "whole %d beyond-refused %d failures %d", whole_ok, beyond_refused, atomic_load(&failures));
    return 0;
}

static void test_buffer_segment_and_threads(void)
{
    const char *name = "a segment of one buffer: offsets from its base, none beyond it; 4 threads attach and detach 800 times";
    struct child exporting, importing;
    char result[LINE] = "";
    child_start(&exporting, range_exporter, NULL);
    struct import_request request;
    if (!exporter_ready(&exporting, name, &request))
        return;
    child_start(&importing, threaded_importer, &request);
    child_read_line(&importing, result, sizeof result, 30000);
    child_wait(&importing, STEP_TIMEOUT_MS);
    child_send(&exporting, "quit");
    child_wait(&exporting, STEP_TIMEOUT_MS);
    report(name, strcmp(result, "whole 1 beyond-refused 1 failures 0") == 0, "%s", result);
}

/* ---------------------------------------------------------------------------------------------
 * A process attaching its own export: its event thread backs the range while its caller waits. */

static int self_importer(int in, int out, void *argument)
{
    (void)in;
    (void)argument;
    size_t size = 2UL << 20;
    volatile uint8_t *buffer = malloc(size);
    pattern_fill(buffer, size, 4);
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    xpmem_apid_t apid = xpmem_get(segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    uintptr_t address = (uintptr_t)buffer;
    struct xpmem_addr where = {.apid = apid, .offset = (off_t)page_start(address)};
    uint8_t *window = xpmem_attach(where, page_span(address, size), NULL);
    if (window == (void *)-1) {
        say(out, "attach failed: %s", strerror(errno));
        return 2;
    }
    volatile uint8_t *alias = window + (address - page_start(address));
    bool same = pattern_check(alias, size, 4) < 0;
    alias[100] = 0xEE;
    bool aliased = buffer[100] == 0xEE && alias != buffer;
    say(out, "same %d aliased %d", same, aliased);
    return 0;
}

static void test_self_attach(void)
{
    const char *name = "a process attaches its own export: a second view of the same bytes";
    struct child self;
    char line[LINE] = "";
    child_start(&self, self_importer, NULL);
    child_read_line(&self, line, sizeof line, STEP_TIMEOUT_MS);
    child_wait(&self, STEP_TIMEOUT_MS);
    report(name, strcmp(line, "same 1 aliased 1") == 0, "%s", line);
}

/* ---------------------------------------------------------------------------------------------
 * Many windows, one file: every xpmem_make is a window of the process's address-space file, and the
 * broker holds that file's descriptors once, not once per window. */

#define SHARED_FILE_WINDOWS 64

static int many_windows(int in, int out, void *argument)
{
    (void)in;
    (void)argument;
    uint8_t *buffer = mmap(NULL, SHARED_FILE_WINDOWS * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buffer == MAP_FAILED) {
        say(out, "mmap failed");
        return 1;
    }
    xpmem_segid_t windows[SHARED_FILE_WINDOWS];
    struct broker_status first = {0}, all = {0}, none = {0};
    windows[0] = xpmem_make(buffer, PAGE, XPMEM_PERMIT_MODE, (void *)0600);
    if (windows[0] < 0 || broker_query_status(broker.socket, &first) < 0) {
        say(out, "first make failed: %s", strerror(errno));
        return 1;
    }
    for (int index = 1; index < SHARED_FILE_WINDOWS; index++) {
        windows[index] = xpmem_make(buffer + index * PAGE, PAGE, XPMEM_PERMIT_MODE, (void *)0600);
        if (windows[index] < 0) {
            say(out, "make %d failed: %s", index, strerror(errno));
            return 1;
        }
    }
    broker_query_status(broker.socket, &all);
    /* The first 40 windows go, the first among them (whose descriptors the broker kept): the file
     * stays held for the others, and serves an attach of a later window with this process's bytes. */
    struct broker_status fewer = {0};
    for (int index = 0; index < 40; index++)
        xpmem_remove(windows[index]);
    broker_query_status(broker.socket, &fewer);
    pattern_fill(buffer + 40 * PAGE, PAGE, 9);
    xpmem_apid_t apid = xpmem_get(windows[40], XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    struct xpmem_addr where = {.apid = apid, .offset = 0};
    uint8_t *view = apid < 0 ? (void *)-1 : xpmem_attach(where, PAGE, NULL);
    bool reads = view != (void *)-1 && pattern_check(view, PAGE, 9) < 0;
    if (view != (void *)-1)
        xpmem_detach(view);
    if (apid >= 0)
        xpmem_release(apid);
    for (int index = 40; index < SHARED_FILE_WINDOWS; index++)
        xpmem_remove(windows[index]);
    broker_query_status(broker.socket, &none);
    say(out, "segments %u descriptors-grown %d after-40-removed %d window-reads %d descriptors-freed %d",
        all.segments - first.segments, (int)all.open_descriptors - (int)first.open_descriptors,
        (int)fewer.open_descriptors - (int)first.open_descriptors, reads,
        (int)first.open_descriptors - (int)none.open_descriptors);
    return 0;
}

static void test_windows_share_one_file(void)
{
    const char *name = "64 xpmem_make windows of one process cost the broker one file's descriptors, freed with the last";
    struct child making;
    char line[LINE] = "";
    child_start(&making, many_windows, NULL);
    child_read_line(&making, line, sizeof line, STEP_TIMEOUT_MS);
    child_wait(&making, STEP_TIMEOUT_MS);
    unsigned segments = 0;
    int grown = -1, after_removals = -1, reads = 0, freed = 0;
    bool parsed = sscanf(line, "segments %u descriptors-grown %d after-40-removed %d window-reads %d descriptors-freed %d",
                         &segments, &grown, &after_removals, &reads, &freed) == 5;
    /* Without sharing the 63 later windows would hold 126 more descriptors, and removing 40 would free
     * 80. Slack of 4 covers other tests' processes leaving meanwhile; the last window frees the file's 2. */
    report(name, parsed && segments == SHARED_FILE_WINDOWS - 1 && grown <= 4 && after_removals >= -4
                     && after_removals <= 4 && reads == 1 && freed >= 2 && freed <= 6,
           "%s", line);
}

/* ---------------------------------------------------------------------------------------------
 * Autostart: racing processes with no broker start exactly one. */

static const char *autostart_socket;

static int racer(int in, int out, void *argument)
{
    (void)argument;
    setenv("XPMEM_SOCKET", autostart_socket, 1);
    unsetenv("XPMEM_AUTOSTART");
    char line[LINE];
    hear(in, line, sizeof line); /* start together */
    int version = xpmem_version();
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    say(out, "version-ok %d make-ok %d", version >= 0, segid > 0);
    return 0;
}

/* Processes running xpmemd with `socket` on their command line. */
static int count_brokers_for(const char *socket)
{
    DIR *processes = opendir("/proc");
    if (processes == NULL)
        return -1;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(processes)) != NULL) {
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9')
            continue;
        char path[300], arguments[4096];
        snprintf(path, sizeof path, "/proc/%s/cmdline", entry->d_name);
        FILE *file = fopen(path, "r");
        if (file == NULL)
            continue;
        size_t length = fread(arguments, 1, sizeof arguments - 1, file);
        fclose(file);
        arguments[length] = '\0';
        /* NUL-separated: argv[0], then "--socket", then the path. */
        const char *program = arguments;
        size_t program_length = strlen(program);
        bool is_broker = program_length >= 6 && strcmp(program + program_length - 6, "xpmemd") == 0;
        bool has_socket = false;
        for (size_t at = 0; at < length; at += strlen(arguments + at) + 1)
            has_socket = has_socket || strcmp(arguments + at, socket) == 0;
        count += is_broker && has_socket;
    }
    closedir(processes);
    return count;
}

static void test_autostart(const char *xpmemd)
{
    const char *name = "with no broker, 4 racing processes start exactly one and all use it";
    char socket[400];
    snprintf(socket, sizeof socket, "%s/autostarted/xpmemd.sock", broker.directory);
    char directory[400];
    snprintf(directory, sizeof directory, "%s/autostarted", broker.directory);
    mkdir(directory, 0700);
    autostart_socket = socket;
    setenv("XPMEM_BROKER", xpmemd, 1);
    struct child racers[4];
    for (int index = 0; index < 4; index++)
        child_start(&racers[index], racer, NULL);
    for (int index = 0; index < 4; index++)
        child_send(&racers[index], "go");
    bool all = true;
    char line[LINE] = "";
    for (int index = 0; index < 4; index++) {
        if (!child_read_line(&racers[index], line, sizeof line, STEP_TIMEOUT_MS) || strcmp(line, "version-ok 1 make-ok 1") != 0)
            all = false;
        child_wait(&racers[index], STEP_TIMEOUT_MS);
    }
    /* Losers of the lock race exit as soon as they have started and found the lock taken, which on a
     * busy machine may take a while; a second broker that serves stays for the whole wait. */
    int brokers = count_brokers_for(socket);
    for (int wait = 0; wait < 1000 && brokers > 1; wait++) {
        usleep(10000);
        brokers = count_brokers_for(socket);
    }
    struct broker_status status = {0};
    bool answered = broker_query_status(socket, &status) == 0;
    if (answered && status.pid > 0) {
        kill(status.pid, SIGTERM);
        for (int wait = 0; wait < 200 && kill(status.pid, 0) == 0; wait++)
            usleep(10000);
    }
    report(name, all && brokers == 1 && answered, "racers: %s; brokers running: %d; status answered: %d", line, brokers, answered);
}

/* --------------------------------------------------------------------------------------------- */

/* ---------------------------------------------------------------------------------------------
 * Windows of different modes, as a real other uid. Every window of a process is a range of its one
 * address-space file, and a descriptor of the file reaches all of it: a window is refused to whom
 * another window does not allow, and a narrower window to a process whose file already went to
 * someone it would not allow. */

#define OTHER_UID 65534
#define OTHER_GID 65534

/* In a child: becomes uid OTHER_UID for good; false (said on `out`) when it cannot. */
static bool drop_to_other_uid(int out)
{
    if (setgroups(0, NULL) == 0 && setresgid(OTHER_GID, OTHER_GID, OTHER_GID) == 0
        && setresuid(OTHER_UID, OTHER_UID, OTHER_UID) == 0)
        return true;
    say(out, "error dropping to uid %d: %s", OTHER_UID, strerror(errno));
    return false;
}

/* Sends `command` (none when NULL) and reads the answer into `answer`; true when it is `expected`. */
static bool answers(struct child *child, const char *command, const char *expected, char *answer, size_t capacity)
{
    answer[0] = '\0';
    if (command != NULL && child_send(child, "%s", command) < 0)
        return false;
    return child_read_line(child, answer, capacity, STEP_TIMEOUT_MS) && strcmp(answer, expected) == 0;
}

static void quit_child(struct child *child)
{
    child_send(child, "quit");
    child_wait(child, STEP_TIMEOUT_MS);
}

/* Makes a public page (0666) and, unless told "late", a secret one (0600) right away; with "late"
 * makes the secret one when told "secret" and says whether that was refused. "remove-secret" and
 * "remove-open" remove one. */
static int two_mode_exporter(int in, int out, void *argument)
{
    bool late = argument != NULL;
    uint8_t *pages = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pages == MAP_FAILED)
        return 2;
    memset(pages, 'p', PAGE);
    memset(pages + PAGE, 's', PAGE);
    xpmem_segid_t open = xpmem_make(pages, PAGE, XPMEM_PERMIT_MODE, (void *)0666);
    xpmem_segid_t secret = late ? 0 : xpmem_make(pages + PAGE, PAGE, XPMEM_PERMIT_MODE, (void *)0600);
    say(out, "ready %lld %lld %lu", (long long)open, (long long)secret, (unsigned long)(uintptr_t)pages);
    char line[LINE];
    while (hear(in, line, sizeof line) && strcmp(line, "quit") != 0) {
        if (strcmp(line, "secret") == 0) {
            errno = 0;
            secret = xpmem_make(pages + PAGE, PAGE, XPMEM_PERMIT_MODE, (void *)0600);
            say(out, "secret %lld errno %d", (long long)secret, secret < 0 ? errno : 0);
        } else if (strcmp(line, "remove-secret") == 0) {
            say(out, xpmem_remove(secret) == 0 ? "removed" : "error remove %s", strerror(errno));
        } else if (strcmp(line, "remove-open") == 0) {
            say(out, xpmem_remove(open) == 0 ? "removed" : "error remove %s", strerror(errno));
        } else if (strcmp(line, "check") == 0) {
            bool kept = true;
            for (size_t index = 0; index < PAGE; index++)
                kept = kept && pages[PAGE + index] == 's';
            say(out, kept ? "secret kept" : "secret changed");
        }
    }
    return 0;
}

/* What a two_mode_exporter said it made. */
struct two_mode_windows {
    long long open, secret; /* segids; secret 0 when late */
    unsigned long pages;
};

/* Starts a two_mode_exporter (`late`: without the secret window) and reads what it made into
 * `windows`; its answer stays in `line`. */
static bool start_two_mode_exporter(struct child *child, bool late, struct two_mode_windows *windows, char *line,
                                    size_t capacity)
{
    line[0] = '\0';
    child_start(child, two_mode_exporter, late ? (void *)"late" : NULL);
    return child_read_line(child, line, capacity, STEP_TIMEOUT_MS)
           && sscanf(line, "ready %lld %lld %lu", &windows->open, &windows->secret, &windows->pages) == 3
           && windows->open > 0 && (late || windows->secret > 0);
}

struct other_uid_request {
    xpmem_segid_t segid;
    uintptr_t offset; /* in the segment */
};

/* As uid OTHER_UID: gets the segment read-write and attaches its page. Says "refused ERRNO",
 * "attached BYTE" or what failed. Then waits for "quit". */
static int other_uid_importer(int in, int out, void *argument)
{
    const struct other_uid_request *request = argument;
    if (!drop_to_other_uid(out))
        return 2;
    errno = 0;
    xpmem_apid_t apid = xpmem_get(request->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    if (apid < 0) {
        say(out, "refused %d", errno);
    } else {
        struct xpmem_addr where = {.apid = apid, .offset = (off_t)request->offset};
        volatile uint8_t *window = xpmem_attach(where, PAGE, NULL);
        if (window == (void *)-1)
            say(out, "error attach %s", strerror(errno));
        else
            say(out, "attached %c", window[0]);
    }
    char line[LINE];
    while (hear(in, line, sizeof line) && strcmp(line, "quit") != 0)
        ;
    return 0;
}

/* Makes the broker's socket reachable by uid OTHER_UID for a test; false (skipped when not root,
 * else reported) when it cannot. close_broker_to_other_uid puts the directory's mode back; the
 * socket goes back to 0600. */
static bool open_broker_to_other_uid(const char *name, struct stat *directory_before)
{
    if (geteuid() != 0) {
        printf("skip %s: needs root to run an importer as uid %d\n", name, OTHER_UID);
        return false;
    }
    if (stat(broker.directory, directory_before) != 0 || chmod(broker.directory, 0711) != 0
        || chmod(broker.socket, 0666) != 0) {
        report(name, false, "cannot open %s to uid %d: %s", broker.socket, OTHER_UID, strerror(errno));
        return false;
    }
    return true;
}

static void close_broker_to_other_uid(const struct stat *directory_before)
{
    chmod(broker.socket, 0600);
    chmod(broker.directory, directory_before->st_mode & 07777);
}

static void test_windows_of_different_modes(void)
{
    const char *name = "as another uid: a 0666 window is refused while the same process has a 0600 one (the file "
                       "reaches both), and once another uid attached, a 0600 window cannot be made";
    struct stat directory_before;
    if (!open_broker_to_other_uid(name, &directory_before))
        return;
    const char *failed_at = NULL;
    char line[LINE] = "", answer[LINE] = "";
    struct two_mode_windows windows;
    struct child both, late, importing;
    if (!start_two_mode_exporter(&both, false, &windows, line, sizeof line)) {
        failed_at = "the exporter makes a 0666 and a 0600 window";
    } else {
        struct other_uid_request request = {.segid = windows.open, .offset = 0};
        child_start(&importing, other_uid_importer, &request);
        if (!answers(&importing, NULL, "refused 13", answer, sizeof answer))
            failed_at = "the other uid's get of the 0666 window is refused with EACCES";
        quit_child(&importing);
    }
    quit_child(&both);

    if (failed_at == NULL) {
        if (!start_two_mode_exporter(&late, true, &windows, line, sizeof line)) {
            failed_at = "the exporter makes a 0666 window";
        } else {
            struct other_uid_request request = {.segid = windows.open, .offset = 0};
            child_start(&importing, other_uid_importer, &request);
            if (!answers(&importing, NULL, "attached p", answer, sizeof answer))
                failed_at = "the other uid attaches the 0666 window alone and reads it";
            else if (!answers(&late, "secret", "secret -1 errno 13", answer, sizeof answer))
                failed_at = "a 0600 window is then refused with EACCES";
            quit_child(&importing);
        }
        quit_child(&late);
    }
    close_broker_to_other_uid(&directory_before);
    report(name, failed_at == NULL, "%s: '%s' ('%s')", failed_at ? failed_at : "", answer, line);
}

/* ---------------------------------------------------------------------------------------------
 * Asking again and again for pages already backed (a raw client repeating resolveFault, as a hostile
 * importer can) stops none of the exporter's threads: each stop interrupts their system calls. */

#define ASKED_BYTES (16 * PAGE)
#define ASKS 300

static atomic_int interrupted_polls;
static atomic_bool polling;

static void *poll_forever(void *argument)
{
    (void)argument;
    while (atomic_load(&polling))
        if (poll(NULL, 0, 5) < 0 && errno == EINTR)
            atomic_fetch_add(&interrupted_polls, 1);
    return NULL;
}

/* Exports its whole address space and a written buffer; a thread polls meanwhile. Answers
 * "interrupted" with how many of its polls a signal cut short. */
static int polled_exporter(int in, int out, void *argument)
{
    (void)argument;
    uint8_t *buffer = mmap(NULL, ASKED_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buffer == MAP_FAILED)
        return 2;
    memset(buffer, 7, ASKED_BYTES);
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    atomic_store(&polling, true);
    pthread_t thread;
    pthread_create(&thread, NULL, poll_forever, NULL);
    say(out, "ready %lld %lu", (long long)segid, (unsigned long)(uintptr_t)buffer);
    char line[LINE];
    while (hear(in, line, sizeof line) && strcmp(line, "quit") != 0)
        if (strcmp(line, "interrupted") == 0)
            say(out, "interrupted %d", atomic_load(&interrupted_polls));
    atomic_store(&polling, false);
    pthread_join(thread, NULL);
    return 0;
}

struct asking_request {
    xpmem_segid_t segid;
    uintptr_t address;
};

/* On a connection of its own, speaking the wire protocol: hello, get, one attach (which backs the
 * range), then ASKS resolveFault requests for the same range. Says "asked N" or what failed. */
static int raw_asker(int in, int out, void *argument)
{
    (void)in;
    const struct asking_request *request = argument;
    struct channel channel;
    uint8_t frame[512], reply_buffer[8192];
    struct wire_message reply;
    if (channel_connect(&channel, getenv("XPMEM_SOCKET")) < 0) {
        say(out, "error connect %s", strerror(errno));
        return 2;
    }
    size_t length = wire_encode_hello(frame, sizeof frame, 0, "asker");
    if (channel_call(&channel, frame, length, NULL, 0, WIRE_WELCOME, reply_buffer, sizeof reply_buffer, &reply, NULL) < 0) {
        say(out, "error hello %s", strerror(errno));
        return 2;
    }
    length = wire_encode_get(frame, sizeof frame, 0, (uint64_t)request->segid, WIRE_READ_WRITE);
    if (channel_call(&channel, frame, length, NULL, 0, WIRE_GRANTED, reply_buffer, sizeof reply_buffer, &reply, NULL) < 0) {
        say(out, "error get %s", strerror(errno));
        return 2;
    }
    uint64_t handle = reply.as.granted.handle;
    length = wire_encode_attach(frame, sizeof frame, 0, handle, request->address, ASKED_BYTES);
    if (channel_call(&channel, frame, length, NULL, 0, 0, reply_buffer, sizeof reply_buffer, &reply, NULL) < 0) {
        say(out, "error attach %s", strerror(errno));
        return 2;
    }
    int asked = 0;
    for (; asked < ASKS; asked++) {
        length = wire_encode_resolve_fault(frame, sizeof frame, 0, handle, request->address, ASKED_BYTES);
        if (channel_call(&channel, frame, length, NULL, 0, WIRE_FAULT_RESOLVED, reply_buffer, sizeof reply_buffer, &reply,
                         NULL) < 0)
            break;
    }
    say(out, "asked %d", asked);
    channel_close(&channel);
    return 0;
}

static void test_repeated_fault_requests_stop_nobody(void)
{
    const char *name = "300 resolveFault requests from a raw client for pages already backed interrupt none of the "
                       "exporter's system calls (no thread stop)";
    struct child exporting, asking;
    char line[LINE] = "", answer[LINE] = "", counted[LINE] = "";
    long long segid = -1;
    unsigned long address = 0;
    child_start(&exporting, polled_exporter, NULL);
    int interrupted = -1, asked = -1;
    if (child_read_line(&exporting, line, sizeof line, STEP_TIMEOUT_MS)
        && sscanf(line, "ready %lld %lu", &segid, &address) == 2) {
        struct asking_request request = {.segid = segid, .address = address};
        child_start(&asking, raw_asker, &request);
        if (child_read_line(&asking, answer, sizeof answer, 60000))
            sscanf(answer, "asked %d", &asked);
        child_wait(&asking, STEP_TIMEOUT_MS);
        child_send(&exporting, "interrupted");
        if (child_read_line(&exporting, counted, sizeof counted, STEP_TIMEOUT_MS))
            sscanf(counted, "interrupted %d", &interrupted);
    }
    child_send(&exporting, "quit");
    child_wait(&exporting, STEP_TIMEOUT_MS);
    /* The first attach backs the range: one stop, which the polling thread sees (so the count is
     * real). Every later request finds it backed and whole. */
    report(name, asked == ASKS && interrupted >= 1 && interrupted <= 2, "exporter '%s', asker '%s', then '%s'", line,
           answer, counted);
}

/* ---------------------------------------------------------------------------------------------
 * An exporter pinned to one CPU, as an MPI rank bound to a core is: its first backing starts the
 * library's watch thread and then stops every other thread at once. The new thread, born with every
 * signal blocked, had not run yet on that CPU, so the stop waited 20 ms for it and left it running
 * (as it must a thread that blocks the signal). Now the library waits for its threads to record
 * themselves, and the stop parks every application thread and leaves none running. */

/* Pinned to the CPU it runs on; XPMEM_DEBUG=1 into a pipe it reads back; one thread of its own
 * sleeping in poll. Answers "report" with the first "backed" line's thread counts. */
static int pinned_exporter(int in, int out, void *argument)
{
    (void)argument;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    int diagnostics[2];
    if (sched_setaffinity(0, sizeof one, &one) < 0 || pipe2(diagnostics, O_NONBLOCK) < 0)
        return 2;
    setenv("XPMEM_DEBUG", "1", 1);
    dup2(diagnostics[1], STDERR_FILENO);
    uint8_t *buffer = mmap(NULL, ASKED_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buffer == MAP_FAILED)
        return 2;
    pattern_fill(buffer, ASKED_BYTES, 1);
    atomic_store(&polling, true);
    pthread_t thread;
    pthread_create(&thread, NULL, poll_forever, NULL);
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    say(out, "ready %lld %lu %lu", (long long)segid, (unsigned long)(uintptr_t)buffer, (unsigned long)ASKED_BYTES);
    char line[LINE], text[16384];
    while (hear(in, line, sizeof line) && strcmp(line, "quit") != 0) {
        if (strcmp(line, "report") != 0)
            continue;
        ssize_t got = read(diagnostics[0], text, sizeof text - 1);
        text[got > 0 ? got : 0] = '\0';
        const char *backed = strstr(text, "]: backed [");
        const char *counts = backed != NULL ? strstr(backed, "stopping threads ") : NULL;
        unsigned parked = 0, left = 0;
        double milliseconds = 0;
        if (counts == NULL || sscanf(counts, "stopping threads %lf: %u parked, %u left running", &milliseconds,
                                     &parked, &left) != 3)
            say(out, "no backing line in the diagnostics");
        else
            say(out, "parked %u left running %u", parked, left);
    }
    atomic_store(&polling, false);
    pthread_join(thread, NULL);
    return 0;
}

/* Attaches the request's buffer read-only and checks the exporter's bytes: "attached", or why not. */
static int attach_and_check(int in, int out, void *argument)
{
    (void)in;
    const struct import_request *request = argument;
    uint8_t *window = attach_read_only_or_say(request, out);
    if (window == NULL)
        return 2;
    long bad = pattern_check(window + (request->address - page_start(request->address)), request->size, 1);
    say(out, bad < 0 ? "attached" : "bad byte at %ld", bad);
    return 0;
}

static void test_pinned_exporter_stops_all(void)
{
    const char *name = "an exporter pinned to one CPU: its first backing parks its threads and leaves none running "
                       "(the library's new watch thread is not mistaken for one that blocks the stop signal)";
    struct child exporting, importing;
    struct import_request request;
    char line[LINE] = "", counts[LINE] = "";
    child_start(&exporting, pinned_exporter, NULL);
    if (!exporter_ready(&exporting, name, &request))
        return;
    child_start(&importing, attach_and_check, &request);
    child_read_line(&importing, line, sizeof line, STEP_TIMEOUT_MS);
    child_wait(&importing, STEP_TIMEOUT_MS);
    child_send(&exporting, "report");
    child_read_line(&exporting, counts, sizeof counts, STEP_TIMEOUT_MS);
    quit_child(&exporting);
    /* Parked: the main thread and the polling one at least. */
    unsigned parked = 0, left = 99;
    bool parsed = sscanf(counts, "parked %u left running %u", &parked, &left) == 2;
    report(name, strcmp(line, "attached") == 0 && parsed && parked >= 2 && left == 0, "importer '%s'; exporter '%s'",
           line, counts);
}

/* Kills the broker and starts it again, opens the new socket to the other uid, and waits until
 * `segments` segments are registered again (the exporters come back by themselves). */
static bool restart_broker_for_other_uid(const char *xpmemd, unsigned segments)
{
    kill(broker.pid, SIGKILL);
    waitpid(broker.pid, NULL, 0);
    broker.pid = 0;
    if (broker_restart(&broker, xpmemd) != 0 || chmod(broker.socket, 0666) != 0)
        return false;
    struct broker_status status = {0};
    for (int attempt = 0; attempt < 500 && (broker_query_status(broker.socket, &status) < 0 || status.segments != segments);
         attempt++)
        usleep(10000);
    /* Settled: the guard window a mixed exporter registers first is gone again. */
    usleep(100000);
    return broker_query_status(broker.socket, &status) == 0 && status.segments == segments;
}

static void test_windows_of_different_modes_across_a_restart(const char *xpmemd)
{
    const char *name = "as another uid, across a broker restart: a window registered again keeps the floor it set (a "
                       "0600 window is refused once uid 65534 held the file), a removed 0600 window still keeps uid "
                       "65534 from the file, and the guard window is gone afterwards";
    struct stat directory_before;
    if (!open_broker_to_other_uid(name, &directory_before))
        return;
    const char *failed_at = NULL;
    char line[LINE] = "", answer[LINE] = "";
    struct two_mode_windows late_windows, both_windows;
    struct child late, both, importing, refused;
    bool late_ready = start_two_mode_exporter(&late, true, &late_windows, line, sizeof line);
    if (!start_two_mode_exporter(&both, false, &both_windows, answer, sizeof answer) || !late_ready) {
        failed_at = "the exporters make their windows";
    } else {
        struct other_uid_request request = {.segid = late_windows.open, .offset = 0};
        struct other_uid_request request_both = {.segid = both_windows.open, .offset = 0};
        child_start(&importing, other_uid_importer, &request);
        if (!answers(&importing, NULL, "attached p", answer, sizeof answer))
            failed_at = "the other uid attaches the lone 0666 window";
        else if (!answers(&both, "remove-secret", "removed", answer, sizeof answer))
            failed_at = "the second exporter removes its 0600 window (its memory stays in the file)";
        else if (!restart_broker_for_other_uid(xpmemd, 2))
            failed_at = "the broker restarts and the two windows come back (and only they)";
        else if (!answers(&late, "secret", "secret -1 errno 13", answer, sizeof answer))
            failed_at = "a 0600 window is refused with EACCES: the other uid may hold the file from before";
        else {
            child_start(&refused, other_uid_importer, &request_both);
            if (!answers(&refused, NULL, "refused 13", answer, sizeof answer))
                failed_at = "the other uid's get of the second exporter's 0666 window is refused: its removed 0600 "
                            "window's memory is in the file, and the new broker was told";
            quit_child(&refused);
        }
        quit_child(&importing);
    }
    quit_child(&late);
    quit_child(&both);
    close_broker_to_other_uid(&directory_before);
    report(name, failed_at == NULL, "%s: '%s' ('%s')", failed_at ? failed_at : "", answer, line);
}

/* As uid OTHER_UID, on a raw connection: gets the segment read-only, attaches its first page and
 * keeps the descriptor the broker hands over (as a hostile importer would). Says "held", then
 * answers "read ADDRESS" with the byte the kept file holds at that offset ("byte N"). */
static int other_uid_descriptor_keeper(int in, int out, void *argument)
{
    const struct other_uid_request *request = argument;
    if (!drop_to_other_uid(out))
        return 2;
    struct channel channel;
    uint8_t frame[512], reply_buffer[8192];
    struct wire_message reply;
    int kept = -1;
    size_t length;
    if (channel_connect(&channel, getenv("XPMEM_SOCKET")) < 0
        || (length = wire_encode_hello(frame, sizeof frame, 0, "keeper")) == 0
        || channel_call(&channel, frame, length, NULL, 0, WIRE_WELCOME, reply_buffer, sizeof reply_buffer, &reply, NULL) < 0
        || (length = wire_encode_get(frame, sizeof frame, 0, (uint64_t)request->segid, WIRE_READ_ONLY)) == 0
        || channel_call(&channel, frame, length, NULL, 0, WIRE_GRANTED, reply_buffer, sizeof reply_buffer, &reply, NULL) < 0
        || (length = wire_encode_attach(frame, sizeof frame, 0, reply.as.granted.handle, request->offset, PAGE)) == 0
        || channel_call(&channel, frame, length, NULL, 0, 0, reply_buffer, sizeof reply_buffer, &reply, &kept) < 0
        || kept < 0) {
        say(out, "error %s", strerror(errno));
        return 2;
    }
    say(out, "held");
    char line[LINE];
    unsigned long address;
    while (hear(in, line, sizeof line) && strcmp(line, "quit") != 0) {
        uint8_t byte = 0;
        if (sscanf(line, "read %lu", &address) == 1 && pread(kept, &byte, 1, (off_t)address) == 1)
            say(out, "byte %u", byte);
        else
            say(out, "error read %s", strerror(errno));
    }
    close(kept);
    channel_close(&channel);
    return 0;
}

/* As root: gets and attaches one page of the segment and says what it reads ("read BYTE"). */
static int page_reader(int in, int out, void *argument)
{
    (void)in;
    const struct other_uid_request *request = argument;
    xpmem_apid_t apid = xpmem_get(request->segid, XPMEM_RDONLY, XPMEM_PERMIT_MODE, NULL);
    struct xpmem_addr where = {.apid = apid, .offset = (off_t)request->offset};
    volatile uint8_t *window = apid < 0 ? (void *)-1 : xpmem_attach(where, PAGE, NULL);
    if (window == (void *)-1)
        say(out, "error %s", strerror(errno));
    else
        say(out, "read %c", window[0]);
    return 0;
}

static void test_kept_descriptor_reaches_nothing_later(void)
{
    const char *name = "as another uid: a descriptor kept from before the process's last window went reaches nothing "
                       "of a 0600 window made afterwards (the library starts a fresh file; the broker allows the "
                       "window)";
    struct stat directory_before;
    if (!open_broker_to_other_uid(name, &directory_before))
        return;
    const char *failed_at = NULL;
    char line[LINE] = "", answer[LINE] = "";
    struct two_mode_windows windows;
    long long secret = -1;
    struct child late, keeping, reading;
    if (!start_two_mode_exporter(&late, true, &windows, line, sizeof line)) {
        failed_at = "the exporter makes a 0666 window";
    } else {
        struct other_uid_request keep = {.segid = windows.open, .offset = 0};
        child_start(&keeping, other_uid_descriptor_keeper, &keep);
        char read_command[64];
        snprintf(read_command, sizeof read_command, "read %lu", windows.pages + PAGE);
        if (!answers(&keeping, NULL, "held", answer, sizeof answer))
            failed_at = "the other uid attaches the 0666 window and keeps the descriptor";
        else if (!answers(&late, "remove-open", "removed", answer, sizeof answer))
            failed_at = "the exporter removes its last window";
        else if (child_send(&late, "secret") < 0 || !child_read_line(&late, answer, sizeof answer, STEP_TIMEOUT_MS)
                 || sscanf(answer, "secret %lld", &secret) != 1 || secret <= 0)
            failed_at = "a 0600 window is made afterwards";
        else {
            struct other_uid_request read_secret = {.segid = secret, .offset = 0};
            child_start(&reading, page_reader, &read_secret);
            if (!answers(&reading, NULL, "read s", answer, sizeof answer))
                failed_at = "root reads the 0600 window (so its page is in the file)";
            else if (!answers(&keeping, read_command, "byte 0", answer, sizeof answer))
                failed_at = "the kept descriptor reads a zero where the 0600 window's byte is";
            child_wait(&reading, STEP_TIMEOUT_MS);
        }
        quit_child(&keeping);
    }
    quit_child(&late);
    close_broker_to_other_uid(&directory_before);
    report(name, failed_at == NULL, "%s: '%s' ('%s')", failed_at ? failed_at : "", answer, line);
}

int main(void)
{
    const char *xpmemd = broker_start_for_tests(&broker, "XPMEMD");
    if (xpmemd == NULL)
        return report_setup_failure("no broker to test with");
    double started = now_seconds();

    test_memory_kind("stack", 0);
    test_memory_kind("data", 0);
    test_memory_kind("bss", 0);
    test_memory_kind("heap-small", 1000);
    test_memory_kind("heap-large", 5UL << 20);
    test_memory_kind("mmap", 3UL << 20);
    test_window_with_holes();
    test_read_only();
    test_error_paths();
    test_without_broker();
    test_exit_without_remove();
    test_threads_keep_their_writes();
    test_buffer_segment_and_threads();
    test_self_attach();
    test_windows_share_one_file();
    test_windows_of_different_modes();
    test_repeated_fault_requests_stop_nobody();
    test_pinned_exporter_stops_all();
    test_kept_descriptor_reaches_nothing_later();
    test_many_peers();
    test_broker_restart(xpmemd);
    test_windows_of_different_modes_across_a_restart(xpmemd);
    test_remove_and_release_edges(xpmemd);
    test_following_a_moved_segment(xpmemd);
    test_autostart(xpmemd);

    printf("   (integration tests took %.1f s)\n", now_seconds() - started);
    broker_stop(&broker);
    return report_totals();
}
