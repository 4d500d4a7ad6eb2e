/* The exporter's address space keeps its meaning under the library. Importers follow it: after the exporter unmaps memory they attached and
 * maps new memory at the same address, their existing attachment reads the new bytes (as with
 * XPMEM's page faults); after it moves memory (mremap, as realloc does), the exporter's bytes are
 * intact and importers find them at the new address; where nothing is mapped any more, touching the
 * attachment raises SIGBUS. fork() gives the child a private copy: neither side's later writes reach
 * the other, and the child that uses the API is a client of its own. Real processes and a real
 * broker, driven over pipes. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "test_report.h"
#include "xpmem.h"

#define LINE 4096
#define STEP_TIMEOUT_MS 15000
#define BUFFER_SIZE (UINT64_C(3) << 20)

static struct broker broker;

/* ---------------------------------------------------------------------------------------------
 * The exporter: one anonymous buffer at a fixed address, exported with its whole address space. It
 * answers "check SEED", "fill SEED", "replace SEED" (munmap, then new memory at the same address
 * filled with SEED), "unmap", "move" (mremap to another address: answers "moved ADDRESS" and whether
 * the bytes came along) and "grow" (mremap to twice the size at another address; the new half must
 * read zero). */

struct exporter_state {
    uint8_t *buffer;
    size_t size;
    unsigned seed; /* what the buffer holds */
    xpmem_segid_t segid;
    volatile uint8_t *window; /* "self-window": its own buffer, attached read-only */
};

static uint8_t *new_buffer(void *at, size_t size)
{
    int fixed = at != NULL ? MAP_FIXED_NOREPLACE : 0;
    uint8_t *buffer = mmap(at, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | fixed, -1, 0);
    return buffer == MAP_FAILED || (at != NULL && buffer != at) ? NULL : buffer;
}

/* mremap to a fresh address: reserve one, then move over it. */
static uint8_t *move_buffer(struct exporter_state *state, size_t new_size)
{
    void *target = mmap(NULL, new_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (target == MAP_FAILED)
        return NULL;
    uint8_t *moved = mremap(state->buffer, state->size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, target);
    return moved == MAP_FAILED ? NULL : moved;
}

/* The buffer holds `state->seed` when this runs. The child checks it has those bytes, writes its own,
 * and checks the parent's later writes do not reach it; the parent checks the child's writes did not
 * reach it. Answers "fork parent-kept P child-saw-snapshot S child-kept K own-segid O". */
static void say_fork_verdict(struct exporter_state *state, int out)
{
    int to_child[2], from_child[2];
    if (pipe(to_child) < 0 || pipe(from_child) < 0) {
        say(out, "error pipe");
        return;
    }
    xpmem_segid_t parent_segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    pid_t child = fork();
    if (child == 0) {
        char verdict[64];
        bool snapshot = pattern_check(state->buffer, state->size, state->seed) < 0;
        pattern_fill(state->buffer, state->size, 9);
        (void)!write(from_child[1], "w", 1);
        char go;
        (void)!read(to_child[0], &go, 1);
        bool kept = pattern_check(state->buffer, state->size, 9) < 0;
        xpmem_segid_t own = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
        snprintf(verdict, sizeof verdict, "%d %d %d", snapshot, kept, own > 0 && own != parent_segid);
        (void)!write(from_child[1], verdict, strlen(verdict) + 1);
        _exit(0);
    }
    char wrote = 0, verdict[64] = "none";
    bool heard = read(from_child[0], &wrote, 1) == 1;
    bool parent_kept = heard && pattern_check(state->buffer, state->size, state->seed) < 0;
    pattern_fill(state->buffer, state->size, 10);
    state->seed = 10;
    (void)!write(to_child[1], "g", 1);
    ssize_t got = read(from_child[0], verdict, sizeof verdict - 1);
    verdict[got > 0 ? got : 0] = '\0';
    waitpid(child, NULL, 0);
    int snapshot = 0, kept = 0, own = 0;
    sscanf(verdict, "%d %d %d", &snapshot, &kept, &own);
    say(out, "fork parent-kept %d child-saw-snapshot %d child-kept %d own-segid %d", parent_kept, snapshot, kept, own);
    close(to_child[0]);
    close(to_child[1]);
    close(from_child[0]);
    close(from_child[1]);
}

static void serve_command(struct exporter_state *state, const char *line, int out)
{
    unsigned seed;
    if (sscanf(line, "check %u", &seed) == 1) {
        long bad = pattern_check(state->buffer, state->size, seed);
        say(out, bad < 0 ? "ok" : "bad at %ld", bad);
    } else if (sscanf(line, "fill %u", &seed) == 1) {
        pattern_fill(state->buffer, state->size, seed);
        state->seed = seed;
        say(out, "ok");
    } else if (sscanf(line, "replace %u", &seed) == 1) {
        munmap(state->buffer, state->size);
        uint8_t *again = new_buffer(state->buffer, state->size);
        if (again == NULL) {
            say(out, "error: the address was not free again: %s", strerror(errno));
            return;
        }
        pattern_fill(again, state->size, seed);
        say(out, "ok");
    } else if (strcmp(line, "unmap") == 0) {
        say(out, munmap(state->buffer, state->size) == 0 ? "ok" : "error %s", strerror(errno));
    } else if (sscanf(line, "move %u", &seed) == 1) {
        uint8_t *moved = move_buffer(state, state->size);
        if (moved == NULL) {
            say(out, "error mremap %s", strerror(errno));
            return;
        }
        state->buffer = moved;
        long bad = pattern_check(moved, state->size, seed);
        say(out, "moved %lu %s", (unsigned long)(uintptr_t)moved, bad < 0 ? "intact" : "damaged");
    } else if (sscanf(line, "grow %u", &seed) == 1) {
        uint8_t *moved = move_buffer(state, 2 * state->size);
        if (moved == NULL) {
            say(out, "error mremap %s", strerror(errno));
            return;
        }
        bool kept = pattern_check(moved, state->size, seed) < 0;
        bool zero = true;
        for (size_t index = state->size; index < 2 * state->size; index++)
            zero = zero && moved[index] == 0;
        state->buffer = moved;
        state->size *= 2;
        say(out, "grew %lu %s %s", (unsigned long)(uintptr_t)moved, kept ? "intact" : "damaged",
            zero ? "zero-tail" : "dirty-tail");
    } else if (strcmp(line, "hint") == 0) {
        int64_t taken = xpmem_hint_free(state->buffer, state->size);
        if (taken < 0)
            say(out, "error hint %s", strerror(errno));
        else
            say(out, "hinted %lld", (long long)taken);
    } else if (strcmp(line, "told") == 0) {
        /* What tests/memory_hooks.c, when preloaded, was told of this buffer's pages, as UCX and as
         * Open MPI. */
        bool (*ucx)(uintptr_t, size_t) = (bool (*)(uintptr_t, size_t))dlsym(RTLD_DEFAULT, "memory_hooks_told");
        bool (*open_mpi)(uintptr_t, size_t) = (bool (*)(uintptr_t, size_t))dlsym(RTLD_DEFAULT,
                                                                                  "memory_hooks_told_open_mpi");
        if (ucx == NULL || open_mpi == NULL) {
            say(out, "no hooks");
        } else {
            bool told_ucx = ucx((uintptr_t)state->buffer, state->size);
            bool told_open_mpi = open_mpi((uintptr_t)state->buffer, state->size);
            say(out, "%s", told_ucx && told_open_mpi ? "told" : told_ucx ? "not told (UCX only)"
                           : told_open_mpi ? "not told (Open MPI only)" : "not told");
        }
    } else if (strcmp(line, "remove") == 0) {
        say(out, xpmem_remove(state->segid) == 0 ? "ok" : "error %s", strerror(errno));
    } else if (strcmp(line, "call") == 0) {
        /* Any call: with the broker gone it fails, and the library drops its connection. */
        xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
        say(out, segid < 0 ? "failed %s" : "made", strerror(errno));
    } else if (strcmp(line, "fork") == 0) {
        say_fork_verdict(state, out);
    } else if (strcmp(line, "self-window") == 0) {
        /* A read-only attachment of its own buffer, through its own segment. */
        xpmem_apid_t apid = xpmem_get(state->segid, XPMEM_RDONLY, XPMEM_PERMIT_MODE, NULL);
        struct xpmem_addr where = {.apid = apid, .offset = (off_t)(uintptr_t)state->buffer};
        state->window = apid < 0 ? (void *)-1 : xpmem_attach(where, state->size, NULL);
        if (state->window == (void *)-1)
            say(out, "error self-window %s", strerror(errno));
        else
            say(out, "window %lu", (unsigned long)(uintptr_t)state->window);
    } else if (sscanf(line, "check-window %u", &seed) == 1) {
        long bad = pattern_check(state->window, state->size, seed);
        say(out, bad < 0 ? "ok" : "bad at %ld", bad);
    } else {
        say(out, "unknown command '%s'", line);
    }
}

static int exporter(int in, int out, void *argument)
{
    (void)argument;
    struct exporter_state state = {.buffer = new_buffer(NULL, BUFFER_SIZE), .size = BUFFER_SIZE, .seed = 1};
    if (state.buffer == NULL) {
        say(out, "error mmap %s", strerror(errno));
        return 2;
    }
    pattern_fill(state.buffer, state.size, 1);
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    if (segid < 0) {
        say(out, "error make %s", strerror(errno));
        return 2;
    }
    state.segid = segid;
    say(out, "ready %lld %lu", (long long)segid, (unsigned long)(uintptr_t)state.buffer);
    char line[LINE];
    while (hear(in, line, sizeof line) && strcmp(line, "quit") != 0)
        serve_command(&state, line, out);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The importer: attaches BUFFER_SIZE (or `size`) at an address of the exporter read-write, and answers
 * "check SEED", "fill SEED" and "touch" (which signal reading the first and last page raises). */

struct import_request {
    xpmem_segid_t segid;
    uintptr_t address;
    bool read_only;
    size_t size; /* 0: BUFFER_SIZE */
};

static int importer(int in, int out, void *argument)
{
    const struct import_request *request = argument;
    size_t size = request->size != 0 ? request->size : BUFFER_SIZE;
    xpmem_apid_t apid = xpmem_get(request->segid, request->read_only ? XPMEM_RDONLY : XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    struct xpmem_addr where = {.apid = apid, .offset = (off_t)request->address};
    volatile uint8_t *window = apid < 0 ? (void *)-1 : xpmem_attach(where, size, NULL);
    if (window == (void *)-1) {
        say(out, "error attach %s", strerror(errno));
        return 2;
    }
    say(out, "attached");
    char line[LINE];
    unsigned seed;
    while (hear(in, line, sizeof line) && strcmp(line, "quit") != 0) {
        if (sscanf(line, "check %u", &seed) == 1) {
            long bad = pattern_check(window, size, seed);
            say(out, bad < 0 ? "ok" : "bad at %ld", bad);
        } else if (sscanf(line, "fill %u", &seed) == 1) {
            pattern_fill(window, size, seed);
            say(out, "ok");
        } else if (strcmp(line, "touch") == 0) {
            say(out, "signals %d %d", touch_and_catch(window, false), touch_and_catch(window + size - 1, false));
        } else {
            say(out, "unknown command '%s'", line);
        }
    }
    xpmem_detach((void *)window);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The runner's side: a command to a child and the line it must answer. */

/* Sends `command` and reads the answer into `answer`; true when it starts with `expected`. */
static bool step(struct child *child, const char *command, const char *expected, char *answer, size_t capacity)
{
    answer[0] = '\0';
    if (command != NULL)
        child_send(child, "%s", command);
    return child_read_line(child, answer, capacity, STEP_TIMEOUT_MS) && strncmp(answer, expected, strlen(expected)) == 0;
}

struct scene {
    struct child exporting;
    struct import_request request;
};

static bool scene_start(struct scene *scene, const char *name)
{
    char line[LINE] = "";
    long long segid;
    unsigned long address;
    if (child_start(&scene->exporting, exporter, NULL) < 0
        || !child_read_line(&scene->exporting, line, sizeof line, STEP_TIMEOUT_MS)
        || sscanf(line, "ready %lld %lu", &segid, &address) != 2) {
        report(name, false, "exporter said '%s'", line);
        child_kill(&scene->exporting);
        return false;
    }
    scene->request.segid = segid;
    scene->request.address = address;
    scene->request.read_only = false;
    scene->request.size = 0;
    return true;
}

/* Tells a child to quit and returns its exit status (-1: it did not exit in time). */
static int quit(struct child *child)
{
    child_send(child, "quit");
    return child_wait(child, STEP_TIMEOUT_MS);
}

/* Ends a test with one importer: both children quit, and the verdict names the first failed step. */
static void finish(const char *name, struct scene *scene, struct child *importing, const char *failed_at,
                   const char *answer)
{
    int importer_status = quit(importing);
    int exporter_status = quit(&scene->exporting);
    report(name, failed_at == NULL && importer_status == 0 && exporter_status == 0,
           "%s: '%s' (importer exit %d, exporter exit %d)", failed_at ? failed_at : "exit", answer, importer_status,
           exporter_status);
}

/* The same with two importers (the second may not have started); their exit statuses are not judged. */
static void finish_two(const char *name, struct scene *scene, struct child *first, struct child *second,
                       const char *failed_at, const char *answer)
{
    quit(first);
    if (second != NULL)
        quit(second);
    int exporter_status = quit(&scene->exporting);
    report(name, failed_at == NULL && exporter_status == 0, "%s: '%s' (exporter exit %d)", failed_at ? failed_at : "exit",
           answer, exporter_status);
}

static bool start_importer(struct child *importing, struct import_request *request, char *answer, size_t capacity)
{
    return child_start(importing, importer, request) == 0 && step(importing, NULL, "attached", answer, capacity);
}

/* The importer follows the exporter's unmap and new mapping at the same address, twice, and then a
 * plain unmap raises SIGBUS; a read-write one's writes reach the exporter's new memory too. */
static void check_unmap_and_reuse_followed(const char *name, bool read_only)
{
    struct scene scene;
    if (!scene_start(&scene, name))
        return;
    scene.request.read_only = read_only;
    struct child importing;
    char answer[LINE], expected[64];
    const char *failed_at = NULL;
    if (!start_importer(&importing, &scene.request, answer, sizeof answer))
        failed_at = "attach";
    else if (!step(&importing, "check 1", "ok", answer, sizeof answer))
        failed_at = "importer reads the first bytes";
    else if (!step(&scene.exporting, "replace 5", "ok", answer, sizeof answer))
        failed_at = "exporter replaces its buffer";
    else if (!step(&importing, "check 5", "ok", answer, sizeof answer))
        failed_at = "importer reads the new bytes through its old attachment";
    else if (!read_only && !step(&importing, "fill 6", "ok", answer, sizeof answer))
        failed_at = "importer writes";
    else if (!read_only && !step(&scene.exporting, "check 6", "ok", answer, sizeof answer))
        failed_at = "exporter sees the importer's writes in its new memory";
    else if (!step(&scene.exporting, "replace 8", "ok", answer, sizeof answer)
             || !step(&importing, "check 8", "ok", answer, sizeof answer))
        failed_at = "a second replacement is followed too";
    else if (!step(&scene.exporting, "unmap", "ok", answer, sizeof answer))
        failed_at = "exporter unmaps";
    else {
        snprintf(expected, sizeof expected, "signals %d %d", SIGBUS, SIGBUS);
        if (!step(&importing, "touch", expected, answer, sizeof answer))
            failed_at = "touching what the exporter unmapped raises SIGBUS";
    }
    finish(name, &scene, &importing, failed_at, answer);
}

static void test_unmap_and_reuse_followed(void)
{
    check_unmap_and_reuse_followed("after the exporter unmaps attached memory and maps new memory there, the existing "
                                   "attachment reads the new bytes and its writes reach the exporter; after a plain "
                                   "unmap it raises SIGBUS",
                                   false);
}

static void test_read_only_attachment_follows(void)
{
    check_unmap_and_reuse_followed("a read-only attachment follows too: after the exporter unmaps and maps new memory "
                                   "there it reads the new bytes, after a plain unmap it raises SIGBUS",
                                   true);
}

static void test_own_read_only_window_inside_an_exported_range(void)
{
    const char *name = "an exporter's read-only attachment of its own buffer, inside the range it exports: an importer "
                       "attaching that address gets a hole (SIGBUS) without stalling the exporter, and the exporter's "
                       "window still follows its buffer";
    struct scene scene;
    if (!scene_start(&scene, name))
        return;
    struct child importing;
    bool importer_started = false;
    char answer[LINE], expected[64];
    const char *failed_at = NULL;
    unsigned long window = 0;
    snprintf(expected, sizeof expected, "signals %d %d", SIGBUS, SIGBUS);
    if (!step(&scene.exporting, "self-window", "window ", answer, sizeof answer)
        || sscanf(answer, "window %lu", &window) != 1)
        failed_at = "the exporter attaches its own buffer read-only";
    else {
        struct import_request at_window = scene.request;
        at_window.address = window;
        if (!(importer_started = start_importer(&importing, &at_window, answer, sizeof answer)))
            failed_at = "an importer attaches the window's addresses";
        else if (!step(&importing, "touch", expected, answer, sizeof answer))
            failed_at = "the window's addresses are a hole to the importer";
        else if (!step(&scene.exporting, "fill 4", "ok", answer, sizeof answer)
                 || !step(&scene.exporting, "check-window 4", "ok", answer, sizeof answer))
            failed_at = "the exporter's own window follows its buffer";
    }
    if (importer_started)
        finish(name, &scene, &importing, failed_at, answer);
    else {
        int exporter_status = quit(&scene.exporting);
        report(name, false, "%s: '%s' (exporter exit %d)", failed_at, answer, exporter_status);
    }
}

static void test_move_keeps_bytes(void)
{
    const char *name = "mremap of attached memory (realloc) keeps the exporter's bytes, importers find them at the new "
                       "address, the old attachment raises SIGBUS, and a mapping grown as it moved reads zeros beyond";
    struct scene scene;
    if (!scene_start(&scene, name))
        return;
    struct child first, second;
    bool second_started = false;
    char answer[LINE], expected[64];
    const char *failed_at = NULL;
    unsigned long moved_to = 0;
    if (!start_importer(&first, &scene.request, answer, sizeof answer))
        failed_at = "attach";
    else if (!step(&first, "fill 3", "ok", answer, sizeof answer))
        failed_at = "importer writes";
    else if (!step(&scene.exporting, "move 3", "moved ", answer, sizeof answer) || strstr(answer, " intact") == NULL
             || sscanf(answer, "moved %lu", &moved_to) != 1)
        failed_at = "the exporter's bytes survive the move";
    else if (!step(&scene.exporting, "fill 4", "ok", answer, sizeof answer))
        failed_at = "exporter writes at the new address";
    else {
        struct import_request at_new_address = {.segid = scene.request.segid, .address = moved_to};
        second_started = start_importer(&second, &at_new_address, answer, sizeof answer);
        snprintf(expected, sizeof expected, "signals %d %d", SIGBUS, SIGBUS);
        if (!second_started)
            failed_at = "attach at the new address";
        else if (!step(&second, "check 4", "ok", answer, sizeof answer))
            failed_at = "an importer at the new address reads the exporter's bytes";
        else if (!step(&first, "touch", expected, answer, sizeof answer))
            failed_at = "the old attachment raises SIGBUS where nothing is mapped now";
        else if (!step(&scene.exporting, "grow 4", "grew ", answer, sizeof answer)
                 || strstr(answer, " intact zero-tail") == NULL)
            failed_at = "a mapping grown as it moved keeps its bytes and reads zeros beyond";
    }
    finish_two(name, &scene, &first, second_started ? &second : NULL, failed_at, answer);
}

static void test_fork_gives_a_private_copy(void)
{
    const char *name = "fork() of an exporter whose memory an importer attached: the child has the bytes of fork time, "
                       "neither side's later writes reach the other, the child is a client of its own, and the "
                       "importer still shares the parent's memory";
    struct scene scene;
    if (!scene_start(&scene, name))
        return;
    struct child importing;
    char answer[LINE];
    const char *failed_at = NULL;
    if (!start_importer(&importing, &scene.request, answer, sizeof answer))
        failed_at = "attach";
    else if (!step(&importing, "fill 2", "ok", answer, sizeof answer)
             || !step(&scene.exporting, "check 2", "ok", answer, sizeof answer))
        failed_at = "the importer's writes reach the exporter";
    else if (!step(&scene.exporting, "fill 2", "ok", answer, sizeof answer)
             || !step(&scene.exporting, "fork", "fork parent-kept 1 child-saw-snapshot 1 child-kept 1 own-segid 1",
                      answer, sizeof answer))
        failed_at = "fork";
    else if (!step(&importing, "check 10", "ok", answer, sizeof answer))
        failed_at = "the importer sees the parent's writes after the fork";
    finish(name, &scene, &importing, failed_at, answer);
}

static void test_remove_makes_memory_private(void)
{
    const char *name = "xpmem_remove while the exporter lives: the exporter keeps its bytes and writes on, and the "
                       "attachments importers kept, read-write and read-only, reach none of it (they raise SIGBUS)";
    struct scene scene;
    if (!scene_start(&scene, name))
        return;
    struct child writer, reader;
    struct import_request read_only = scene.request;
    read_only.read_only = true;
    bool reader_started = false;
    char answer[LINE], expected[64];
    const char *failed_at = NULL;
    snprintf(expected, sizeof expected, "signals %d %d", SIGBUS, SIGBUS);
    if (!start_importer(&writer, &scene.request, answer, sizeof answer))
        failed_at = "attach read-write";
    else if (!(reader_started = start_importer(&reader, &read_only, answer, sizeof answer)))
        failed_at = "attach read-only";
    else if (!step(&writer, "fill 3", "ok", answer, sizeof answer) || !step(&reader, "check 3", "ok", answer, sizeof answer))
        failed_at = "both importers share the exporter's memory before the remove";
    else if (!step(&scene.exporting, "remove", "ok", answer, sizeof answer))
        failed_at = "remove";
    else if (!step(&scene.exporting, "check 3", "ok", answer, sizeof answer))
        failed_at = "the exporter keeps its bytes";
    else if (!step(&scene.exporting, "fill 7", "ok", answer, sizeof answer)
             || !step(&scene.exporting, "check 7", "ok", answer, sizeof answer))
        failed_at = "the exporter writes on";
    else if (!step(&writer, "touch", expected, answer, sizeof answer))
        failed_at = "the read-write attachment raises SIGBUS";
    else if (!step(&reader, "touch", expected, answer, sizeof answer))
        failed_at = "the read-only attachment raises SIGBUS";
    finish_two(name, &scene, &writer, reader_started ? &reader : NULL, failed_at, answer);
}

/* ---------------------------------------------------------------------------------------------
 * fork() while other threads free, trim and move backed memory. */

struct busy_exporter {
    xpmem_apid_t apid;
    uint8_t *_Atomic region; /* moved back and forth by one thread */
    atomic_int stop;
};

/* Mallocs 4 MiB from the brk heap, has it backed (an attach of its own segment), frees it (trimming
 * the heap: brk shrinks under malloc's lock, waiting for the watch thread to read the unmap). */
static void *trim_backed_heap(void *argument)
{
    struct busy_exporter *busy = argument;
    while (!atomic_load(&busy->stop)) {
        uint8_t *block = malloc(4u << 20);
        memset(block, 1, 4u << 20);
        struct xpmem_addr where = {.apid = busy->apid, .offset = (off_t)(((uintptr_t)block + 4095) & ~(uintptr_t)4095)};
        void *attached = xpmem_attach(where, 3u << 20, NULL);
        if (attached != (void *)-1)
            xpmem_detach(attached);
        free(block);
    }
    return NULL;
}

/* Moves a backed region to a fresh address again and again (mremap, as realloc does). */
static void *move_backed_region(void *argument)
{
    struct busy_exporter *busy = argument;
    while (!atomic_load(&busy->stop)) {
        void *target = mmap(NULL, 1u << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        void *moved = mremap(busy->region, 1u << 20, 1u << 20, MREMAP_MAYMOVE | MREMAP_FIXED, target);
        if (moved != MAP_FAILED)
            busy->region = moved;
    }
    return NULL;
}

/* In a fork child: does any mapping of the address-space file remain (shared with the parent)? */
static bool shares_address_space_file(void)
{
    char line[512];
    FILE *maps = fopen("/proc/self/maps", "r");
    bool found = false;
    while (maps != NULL && fgets(line, sizeof line, maps))
        found = found || strstr(line, "xpmem-address-space") != NULL;
    if (maps != NULL)
        fclose(maps);
    return found;
}

static int forking_exporter(int in, int out, void *argument)
{
    (void)in;
    int forks = (int)(intptr_t)argument;
    mallopt(M_MMAP_THRESHOLD, 16 << 20); /* 4 MiB blocks from the brk heap, trimmed on free */
    mallopt(M_TRIM_THRESHOLD, 128 << 10);
    mallopt(M_ARENA_MAX, 1);
    struct busy_exporter busy = {0};
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    busy.apid = xpmem_get(segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
    busy.region = mmap(NULL, 1u << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(busy.region, 1, 1u << 20);
    struct xpmem_addr where = {.apid = busy.apid, .offset = (off_t)(uintptr_t)busy.region};
    void *attached = busy.apid < 0 ? (void *)-1 : xpmem_attach(where, 1u << 20, NULL);
    if (attached == (void *)-1) {
        say(out, "error attach %s", strerror(errno));
        return 2;
    }
    xpmem_detach(attached);
    int shared[2];
    if (pipe(shared) < 0)
        return 2;
    pthread_t trimmer, mover;
    pthread_create(&trimmer, NULL, trim_backed_heap, &busy);
    pthread_create(&mover, NULL, move_backed_region, &busy);
    int children_sharing = 0;
    double slowest = 0;
    for (int index = 0; index < forks; index++) {
        double began = now_seconds();
        pid_t child = fork();
        if (child == 0) {
            if (shares_address_space_file())
                (void)!write(shared[1], "S", 1);
            _exit(0);
        }
        waitpid(child, NULL, 0);
        double took = now_seconds() - began;
        slowest = took > slowest ? took : slowest;
        /* The runner's deadline is per fork, not for all of them: a loaded machine makes 200 forks
         * slow, a deadlock makes one never end. */
        say(out, "forks %d", index + 1);
    }
    atomic_store(&busy.stop, 1);
    pthread_join(trimmer, NULL);
    pthread_join(mover, NULL);
    close(shared[1]);
    char byte;
    while (read(shared[0], &byte, 1) == 1)
        children_sharing++;
    bool intact = true;
    for (size_t index = 0; index < (1u << 20); index++)
        intact = intact && busy.region[index] == 1;
    say(out, "forked %d sharing %d region %s (slowest fork %.0f ms)", forks, children_sharing, intact ? "intact" : "damaged",
        slowest * 1000);
    return 0;
}

static void test_fork_while_threads_free_and_move(void)
{
    const char *name = "fork() while other threads free backed heap (brk trimming) and mremap backed memory: no "
                       "deadlock, no child keeps a mapping shared with the parent, the moved bytes are intact";
    struct child exporting;
    char answer[LINE] = "", last_progress[LINE] = "none";
    double began = now_seconds();
    bool started = child_start(&exporting, forking_exporter, (void *)(intptr_t)200) == 0;
    /* Each fork has STEP_TIMEOUT_MS, like every other step here; the time for all 200 is unbounded
     * as long as they keep coming. A deadlock (or a thread that can never run again) is a fork that
     * never ends: no line within the step's time. */
    bool heard = started;
    while (heard && (heard = child_read_line(&exporting, answer, sizeof answer, STEP_TIMEOUT_MS))
           && strncmp(answer, "forks ", 6) == 0)
        snprintf(last_progress, sizeof last_progress, "%s", answer);
    bool ok = heard && strncmp(answer, "forked 200 sharing 0 region intact ", 35) == 0;
    int status = started ? child_wait(&exporting, STEP_TIMEOUT_MS) : -1;
    /* For judging the step time on a loaded machine: how long the forks took when they passed. */
    if (getenv("XPMEM_TEST_TIMINGS") != NULL)
        fprintf(stderr, "fork test: %.1f s, '%s'\n", now_seconds() - began, answer);
    report(name, ok && status == 0,
           "exporter said '%s' after %.1f s, last progress '%s' (exit %d; a deadlock shows as no answer within %d s of "
           "the last progress)",
           heard ? answer : "", now_seconds() - began, last_progress, status, STEP_TIMEOUT_MS / 1000);
}

/* The library tells the hooks on a thread of its own, after the attach has been answered: asked
 * again until `timeout_ms` has passed. */
static bool told_within(struct child *exporting, const char *expected, int timeout_ms, char *answer, size_t capacity)
{
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        if (step(exporting, "told", expected, answer, capacity) && strcmp(answer, expected) == 0)
            return true;
        if (strcmp(answer, "not told") != 0)
            return false; /* no answer, or another one: asking again would not help */
        usleep(10000);
    }
    return false;
}

/* Sharing replaces the exporter's pages (its bytes stay): a registration cache that pinned the old
 * ones (UCX's or Open MPI's, for a network card) must hear of it, through UCX's ucm_vm_munmap, as it
 * would hear of an munmap, and through Open MPI's opal_mem_hooks_release_hook where asked
 * (XPMEM_TELL_OPEN_MPI=1). Only under tests/memory_hooks.c, which stands in for both. */
static void test_memory_hooks_told_of_replaced_pages(bool tell_open_mpi)
{
    const char *name = tell_open_mpi ? "with XPMEM_TELL_OPEN_MPI=1, UCX's and Open MPI's memory hooks are both told of "
                                       "the pages a first attach replaced"
                                     : "where UCX's memory hooks are loaded, they are told of the pages a first attach "
                                       "replaced (Open MPI's only when asked)";
    /* The exporter is forked from this process and reads its environment when it tells. */
    if (tell_open_mpi)
        setenv("XPMEM_TELL_OPEN_MPI", "1", 1);
    else
        unsetenv("XPMEM_TELL_OPEN_MPI");
    struct scene scene;
    bool started = scene_start(&scene, name);
    unsetenv("XPMEM_TELL_OPEN_MPI");
    if (!started)
        return;
    char answer[LINE];
    if (step(&scene.exporting, "told", "no hooks", answer, sizeof answer)) {
        quit(&scene.exporting);
        printf("skip %s: needs tests/memory_hooks.c preloaded (run-tests.sh runs these tests again with it)\n", name);
        return;
    }
    if (strcmp(answer, "not told") != 0) {
        quit(&scene.exporting);
        report(name, false, "before any attach the hooks were told of the buffer: '%s'", answer);
        return;
    }
    /* Open MPI is told before UCX: once UCX has been told, whether Open MPI was is settled. */
    const char *expected = tell_open_mpi ? "told" : "not told (UCX only)";
    struct child importing;
    const char *failed_at = NULL;
    if (!start_importer(&importing, &scene.request, answer, sizeof answer))
        failed_at = "attach";
    else if (!step(&importing, "check 1", "ok", answer, sizeof answer))
        failed_at = "importer reads the exporter's bytes";
    else if (!told_within(&scene.exporting, expected, STEP_TIMEOUT_MS, answer, sizeof answer))
        failed_at = tell_open_mpi ? "both were told of the buffer's replaced pages" : "UCX alone was told of them";
    finish(name, &scene, &importing, failed_at, answer);
}

/* Runs last: it kills the test's broker. */
static void test_unmap_after_broker_loss(void)
{
    const char *name = "after the broker dies and a call has failed, an exporter unmapping memory an importer had "
                       "attached does not hang";
    struct scene scene;
    if (!scene_start(&scene, name))
        return;
    struct child importing;
    char answer[LINE];
    const char *failed_at = NULL;
    if (!start_importer(&importing, &scene.request, answer, sizeof answer))
        failed_at = "attach";
    else if (!step(&importing, "check 1", "ok", answer, sizeof answer))
        failed_at = "importer reads";
    else {
        kill(broker.pid, SIGKILL);
        waitpid(broker.pid, NULL, 0);
        broker.pid = 0;
        if (!step(&scene.exporting, "call", "failed ", answer, sizeof answer))
            failed_at = "a call with the broker gone fails";
        else if (!step(&scene.exporting, "replace 4", "ok", answer, sizeof answer))
            failed_at = "the exporter unmaps and maps again with no broker";
        else if (!step(&scene.exporting, "check 4", "ok", answer, sizeof answer))
            failed_at = "the exporter's new memory";
    }
    finish(name, &scene, &importing, failed_at, answer);
}

/* xpmem_hint_free: private memory nobody attached takes the hint, memory a peer attached does not,
 * and bytes written after a hint are what peers then read. */
static void test_hint_free_where_it_is_taken(void)
{
    const char *name = "xpmem_hint_free takes private memory peers have not attached, not memory they have, and "
                       "what is written after it is kept";
    struct scene scene;
    if (!scene_start(&scene, name))
        return;
    char answer[LINE], expected[64];
    struct child importing = {0};
    snprintf(expected, sizeof expected, "hinted %llu", (unsigned long long)BUFFER_SIZE);
    const char *failed_at = NULL;
    if (!step(&scene.exporting, "hint", expected, answer, sizeof answer))
        failed_at = "hinting the private buffer";
    else if (!step(&scene.exporting, "fill 2", "ok", answer, sizeof answer))
        failed_at = "writing after the hint";
    else if (!start_importer(&importing, &scene.request, answer, sizeof answer))
        failed_at = "attaching";
    else if (!step(&importing, "check 2", "ok", answer, sizeof answer))
        failed_at = "the importer reading what was written after the hint";
    else if (!step(&scene.exporting, "hint", "hinted 0", answer, sizeof answer))
        failed_at = "hinting the attached buffer";
    else if (!step(&importing, "check 2", "ok", answer, sizeof answer))
        failed_at = "the importer reading after the refused hint";
    if (importing.pid > 0)
        finish(name, &scene, &importing, failed_at, answer);
    else
        report(name, false, "%s: '%s' (exporter exit %d)", failed_at, answer, quit(&scene.exporting));

    long page = sysconf(_SC_PAGESIZE);
    uint8_t *buffer = new_buffer(NULL, 4 * (size_t)page);
    errno = 0;
    bool unaligned = xpmem_hint_free(buffer + 1, (size_t)page) == -1 && errno == EINVAL;
    errno = 0;
    bool null = xpmem_hint_free(NULL, (size_t)page) == -1 && errno == EINVAL;
    errno = 0;
    bool wrapping = xpmem_hint_free(buffer, SIZE_MAX - (size_t)page + 1) == -1 && errno == EINVAL;
    /* Two private pages around a hole and a read-only page: only the writable private pages take it. */
    munmap(buffer + page, (size_t)page);
    mprotect(buffer + 2 * page, (size_t)page, PROT_READ);
    int64_t taken = xpmem_hint_free(buffer, 4 * (size_t)page);
    report("xpmem_hint_free refuses NULL, unaligned and wrapping ranges with EINVAL, and counts only the writable "
           "private pages of a range with holes",
           unaligned && null && wrapping && taken == 2 * page, "unaligned %d null %d wrapping %d taken %lld", unaligned,
           null, wrapping, (long long)taken);
}

/* In a memory cgroup too small for what the child keeps, the kernel reclaims the pages hinted free
 * and not written since (they read as zeros), and nothing else: pages written after the hint and
 * pages never hinted keep their bytes, and the child is not killed. */
#define HINT_REGION (UINT64_C(64) << 20)
#define HINT_FREED (UINT64_C(48) << 20)
#define HINT_LIMIT (UINT64_C(80) << 20)
#define HINT_MORE (UINT64_C(48) << 20)

/* Whether bytes [offset, offset + length) of a buffer pattern_fill filled whole with `seed` still hold it. */
static bool holds_pattern(const uint8_t *buffer, size_t offset, size_t length, unsigned seed)
{
    for (size_t index = offset; index < offset + length; index++)
        if (buffer[index] != pattern_byte(index, seed))
            return false;
    return true;
}

static int hinting_child(int in, int out, void *argument)
{
    (void)argument;
    char line[LINE];
    if (!hear(in, line, sizeof line) || strcmp(line, "go") != 0) /* moved into the cgroup by now */
        return 2;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uint8_t *region = new_buffer(NULL, HINT_REGION);
    if (region == NULL)
        return 2;
    /* 4 KiB pages, whatever the machine's THP policy: a write into a hinted huge page keeps all of
     * it, so with THP `always` the every-16th-page writes below would keep everything (the kernel's
     * MADV_FREE, not the library's doing) and the cgroup would kill the child. */
    madvise(region, HINT_REGION, MADV_NOHUGEPAGE);
    pattern_fill(region, HINT_REGION, 7);
    int64_t taken = xpmem_hint_free(region, HINT_FREED);
    /* Every 16th hinted page is written after the hint: those must survive. */
    for (size_t offset = 0; offset < HINT_FREED; offset += 16 * page)
        pattern_fill(region + offset, page, 9);
    uint8_t *more = new_buffer(NULL, HINT_MORE);
    if (more == NULL)
        return 2;
    madvise(more, HINT_MORE, MADV_NOHUGEPAGE);
    memset(more, 1, HINT_MORE);
    size_t zero_pages = 0, intact_pages = 0, damaged_pages = 0, lost_writes = 0;
    for (size_t offset = 0; offset < HINT_FREED; offset += page) {
        if (offset % (16 * page) == 0) {
            lost_writes += pattern_check(region + offset, page, 9) >= 0;
            continue;
        }
        bool zero = true;
        for (size_t index = 0; index < page && zero; index++)
            zero = region[offset + index] == 0;
        /* A clean hinted page holds what it held, or zeros: never anything else. */
        if (zero)
            zero_pages++;
        else if (holds_pattern(region, offset, page, 7))
            intact_pages++;
        else
            damaged_pages++;
    }
    bool kept = holds_pattern(region, HINT_FREED, HINT_REGION - HINT_FREED, 7);
    say(out, "taken %lld zero %zu intact %zu damaged %zu lost-writes %zu unhinted %s", (long long)taken, zero_pages,
        intact_pages, damaged_pages, lost_writes, kept ? "kept" : "damaged");
    return 0;
}

static void test_hint_free_under_pressure(void)
{
    const char *name = "under memory pressure in a memory cgroup, pages hinted free and clean read as zeros, pages "
                       "written after the hint and pages never hinted keep their bytes, and the process lives";
    struct memory_cgroup cgroup;
    char why[512];
    if (!memory_cgroup_make(&cgroup, why, sizeof why)) {
        printf("skip %s: %s\n", name, why);
        return;
    }
    if (!memory_cgroup_set_limit(&cgroup, HINT_LIMIT)) {
        report(name, false, "cannot set %s: %s", cgroup.limit_file, strerror(errno));
        memory_cgroup_remove(&cgroup);
        return;
    }
    struct child hinting;
    char line[LINE] = "";
    child_start(&hinting, hinting_child, NULL);
    bool moved = memory_cgroup_add(&cgroup, hinting.pid);
    child_send(&hinting, "go");
    bool answered = moved && child_read_line(&hinting, line, sizeof line, 120000);
    int status = child_wait(&hinting, STEP_TIMEOUT_MS);
    memory_cgroup_remove(&cgroup);
    long long taken = -1;
    size_t zero = 0, intact = 0, damaged = 1, lost = 1;
    char unhinted[16] = "";
    bool parsed = answered && sscanf(line, "taken %lld zero %zu intact %zu damaged %zu lost-writes %zu unhinted %15s",
                                     &taken, &zero, &intact, &damaged, &lost, unhinted) == 6;
    report(name, parsed && status == 0 && taken == (long long)HINT_FREED && zero > 0 && damaged == 0 && lost == 0
                     && strcmp(unhinted, "kept") == 0,
           "%s (exit %d, %s)", moved ? line : "could not move the child into the cgroup", status,
           cgroup.version_2 ? "cgroup v2 memory.high" : "cgroup v1 memory.limit_in_bytes");
    if (parsed)
        printf("   (%zu of %llu clean hinted pages reclaimed, %zu still held)\n", zero,
               (unsigned long long)(HINT_FREED / (uint64_t)sysconf(_SC_PAGESIZE) * 15 / 16), intact);
}

/* ---------------------------------------------------------------------------------------------
 * Huge pages. Where shmem huge pages are allowed, the exporter's transparent huge pages stay huge
 * once shared (shmem_huge.h); memory with 4 KiB pages stays so. */

#define HUGE_REGION (UINT64_C(4) << 20)
#define HUGE_ALIGNMENT (UINT64_C(2) << 20)
#define THP_SETTINGS "/sys/kernel/mm/transparent_hugepage/"

static uint8_t *aligned_region(size_t size, size_t alignment)
{
    uint8_t *reserved = mmap(NULL, size + alignment, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (reserved == MAP_FAILED)
        return NULL;
    uint8_t *aligned = (uint8_t *)(((uintptr_t)reserved + alignment - 1) & ~(uintptr_t)(alignment - 1));
    if (aligned > reserved)
        munmap(reserved, (size_t)(aligned - reserved));
    munmap(aligned + size, (size_t)(reserved + size + alignment - (aligned + size)));
    return aligned;
}


/* The kB of [address, +length) that the file mapped there holds in huge pages: the file is mapped
 * again elsewhere (through /proc/self/map_files, root only), aligned alike and asking for huge
 * pages, so that each huge page of it is mapped with one entry, which smaps counts. The exporter's
 * own mapping does not ask, and maps them with 4 KiB entries. -1 when it cannot tell. */
static long long file_huge_kib(const uint8_t *address, size_t length)
{
    unsigned long range[2] = {0, 0};
    char path[128];
    if (smaps_kib(address, "Rss:", range) < 0)
        return -1;
    snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", range[0], range[1]);
    int file = open(path, O_RDONLY | O_CLOEXEC);
    if (file < 0)
        return -1;
    uint8_t *again = aligned_region(length, HUGE_ALIGNMENT);
    uint8_t *mapped = again == NULL ? MAP_FAILED
                                    : mmap(again, length, PROT_READ, MAP_SHARED | MAP_FIXED, file, (off_t)(uintptr_t)address);
    close(file);
    if (mapped == MAP_FAILED)
        return -1;
    madvise(mapped, length, MADV_HUGEPAGE);
    for (size_t offset = 0; offset < length; offset += 4096)
        (void)((volatile uint8_t *)mapped)[offset];
    long long huge = smaps_kib(mapped, "ShmemPmdMapped:", NULL);
    munmap(mapped, length);
    return huge;
}

/* Two 2 MiB-aligned regions: `huge` asks for transparent huge pages, `small` refuses them. Answers
 * "check huge|small SEED", "fill huge SEED", "pages" ("file-huge huge K small K": the kB of each the
 * address-space file holds in huge pages) and "move huge SEED" (mremap of the whole region). */
static int huge_exporter(int in, int out, void *argument)
{
    (void)argument;
    uint8_t *huge = aligned_region(HUGE_REGION, HUGE_ALIGNMENT);
    uint8_t *small = aligned_region(HUGE_REGION, HUGE_ALIGNMENT);
    if (huge == NULL || small == NULL || madvise(huge, HUGE_REGION, MADV_HUGEPAGE) != 0
        || madvise(small, HUGE_REGION, MADV_NOHUGEPAGE) != 0) {
        say(out, "error setting up: %s", strerror(errno));
        return 2;
    }
    pattern_fill(huge, HUGE_REGION, 1);
    pattern_fill(small, HUGE_REGION, 1);
    long long private_huge = smaps_kib(huge, "AnonHugePages:", NULL);
    xpmem_segid_t segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
    if (private_huge < (long long)(HUGE_REGION >> 10))
        say(out, "no-thp %lld kB of %llu", private_huge, (unsigned long long)(HUGE_REGION >> 10));
    else if (segid < 0)
        say(out, "error make %s", strerror(errno));
    else
        say(out, "ready %lld %lu %lu", (long long)segid, (unsigned long)(uintptr_t)huge, (unsigned long)(uintptr_t)small);
    char line[LINE], which[16];
    unsigned seed;
    while (hear(in, line, sizeof line) && strcmp(line, "quit") != 0) {
        if (sscanf(line, "check %15s %u", which, &seed) == 2) {
            long bad = pattern_check(strcmp(which, "huge") == 0 ? huge : small, HUGE_REGION, seed);
            say(out, bad < 0 ? "ok" : "bad at %ld", bad);
        } else if (sscanf(line, "fill huge %u", &seed) == 1) {
            pattern_fill(huge, HUGE_REGION, seed);
            say(out, "ok");
        } else if (strcmp(line, "pages") == 0) {
            say(out, "file-huge huge %lld small %lld", file_huge_kib(huge, HUGE_REGION), file_huge_kib(small, HUGE_REGION));
        } else if (sscanf(line, "move huge %u", &seed) == 1) {
            void *target = mmap(NULL, HUGE_REGION, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            uint8_t *moved = target == MAP_FAILED ? MAP_FAILED
                                                  : mremap(huge, HUGE_REGION, HUGE_REGION, MREMAP_MAYMOVE | MREMAP_FIXED, target);
            if (moved == MAP_FAILED) {
                say(out, "error mremap %s", strerror(errno));
                continue;
            }
            huge = moved;
            say(out, pattern_check(huge, HUGE_REGION, seed) < 0 ? "moved intact" : "moved damaged");
        } else {
            say(out, "unknown command '%s'", line);
        }
    }
    return 0;
}

static void check_huge_pages_stay_huge(const char *name)
{
    struct child exporting, huge_importing, small_importing;
    char answer[LINE] = "";
    long long segid;
    unsigned long huge, small;
    if (child_start(&exporting, huge_exporter, NULL) < 0 || !child_read_line(&exporting, answer, sizeof answer, STEP_TIMEOUT_MS)) {
        report(name, false, "the exporter did not start: '%s'", answer);
        child_kill(&exporting);
        return;
    }
    if (strncmp(answer, "no-thp", 6) == 0) {
        printf("skip %s: the kernel gave the exporter's private buffer no huge pages (%s)\n", name, answer);
        quit(&exporting);
        return;
    }
    if (sscanf(answer, "ready %lld %lu %lu", &segid, &huge, &small) != 3) {
        report(name, false, "exporter said '%s'", answer);
        quit(&exporting);
        return;
    }
    /* First the second MiB alone (part of the first huge page: copied as 4 KiB pages), then all of it
     * (the second huge page whole: copied as a huge page): two requests back one buffer. */
    struct import_request part_request = {.segid = segid, .address = huge + (1UL << 20), .size = 1UL << 20};
    struct import_request huge_request = {.segid = segid, .address = huge, .size = HUGE_REGION};
    struct import_request small_request = {.segid = segid, .address = small, .size = HUGE_REGION};
    const char *failed_at = NULL;
    bool part_started = false, huge_started = false, small_started = false;
    long long huge_kib = -1, small_kib = -1;
    struct child part_importing;
    if (!(part_started = start_importer(&part_importing, &part_request, answer, sizeof answer)))
        failed_at = "an importer attaches one MiB of the huge-page region";
    else if (!(huge_started = start_importer(&huge_importing, &huge_request, answer, sizeof answer)))
        failed_at = "an importer attaches the huge-page region";
    else if (!(small_started = start_importer(&small_importing, &small_request, answer, sizeof answer)))
        failed_at = "an importer attaches the 4 KiB region";
    else if (!step(&huge_importing, "check 1", "ok", answer, sizeof answer)
             || !step(&small_importing, "check 1", "ok", answer, sizeof answer))
        failed_at = "importers read the exporter's bytes";
    else if (!step(&huge_importing, "fill 2", "ok", answer, sizeof answer)
             || !step(&exporting, "check huge 2", "ok", answer, sizeof answer))
        failed_at = "the exporter sees an importer's writes";
    else if (!step(&exporting, "fill huge 3", "ok", answer, sizeof answer)
             || !step(&huge_importing, "check 3", "ok", answer, sizeof answer))
        failed_at = "the importer sees the exporter's later writes";
    else if (!step(&exporting, "pages", "file-huge ", answer, sizeof answer)
             || sscanf(answer, "file-huge huge %lld small %lld", &huge_kib, &small_kib) != 2
             || huge_kib < (long long)(HUGE_ALIGNMENT >> 10) || small_kib != 0)
        failed_at = "the file holds the whole huge page of the huge-page region in a huge page, and none of the other";
    else if (!step(&exporting, "move huge 3", "moved intact", answer, sizeof answer))
        failed_at = "mremap of the whole region (backed by two requests), as realloc does, keeps the bytes";
    if (part_started)
        quit(&part_importing);
    if (huge_started)
        quit(&huge_importing);
    if (small_started)
        quit(&small_importing);
    int exporter_status = quit(&exporting);
    report(name, failed_at == NULL && exporter_status == 0, "%s: '%s' (exporter exit %d)", failed_at ? failed_at : "exit",
           answer, exporter_status);
}

static void test_huge_pages_stay_huge(void)
{
    const char *name = "where shmem huge pages are allowed (advise), an exporter's transparent huge pages are copied "
                       "into huge pages of the file, its 4 KiB pages into 4 KiB ones, importers and the exporter see "
                       "each other's writes, and a whole-region mremap keeps the bytes";
    char shmem[32], anonymous[32];
    thp_setting("shmem_enabled", shmem, sizeof shmem);
    thp_setting("enabled", anonymous, sizeof anonymous);
    const char *switched = getenv("XPMEM_SHMEM_HUGE");
    if (switched != NULL && strcmp(switched, "0") == 0) {
        printf("skip %s: XPMEM_SHMEM_HUGE=0 turns it off\n", name);
        return;
    }
    if (geteuid() != 0 || access(THP_SETTINGS "shmem_enabled", W_OK) != 0) {
        printf("skip %s: setting %sshmem_enabled needs root\n", name, THP_SETTINGS);
        return;
    }
    if (shmem[0] == '\0' || strcmp(anonymous, "never") == 0 || anonymous[0] == '\0') {
        printf("skip %s: no transparent huge pages here (enabled '%s', shmem_enabled '%s')\n", name, anonymous, shmem);
        return;
    }
    /* The per-size setting (Linux 6.11+) overrides the global one this test sets, unless it inherits. */
    char per_size[32];
    thp_setting("hugepages-2048kB/shmem_enabled", per_size, sizeof per_size);
    if (per_size[0] != '\0' && strcmp(per_size, "inherit") != 0) {
        printf("skip %s: hugepages-2048kB/shmem_enabled is '%s', not inherit\n", name, per_size);
        return;
    }
    struct utsname system;
    unsigned major = 0, minor = 0;
    if (uname(&system) != 0 || sscanf(system.release, "%u.%u", &major, &minor) != 2 || major < 6
        || (major == 6 && minor < 7)) {
        printf("skip %s: the kernel (%s) has no PAGEMAP_SCAN (Linux 6.7+)\n", name, system.release);
        return;
    }
    /* Set before the exporter starts: the library reads it once per process. */
    if (!write_file(THP_SETTINGS "shmem_enabled", "advise")) {
        report(name, false, "cannot write advise to %sshmem_enabled: %s", THP_SETTINGS, strerror(errno));
        return;
    }
    check_huge_pages_stay_huge(name);
    if (!write_file(THP_SETTINGS "shmem_enabled", shmem))
        printf("   (could not put shmem_enabled back to '%s': %s)\n", shmem, strerror(errno));
}

int main(void)
{
    const char *xpmemd = broker_start_for_tests(&broker, "XPMEMD");
    if (xpmemd == NULL)
        return report_setup_failure("no broker to test with");
    test_unmap_and_reuse_followed();
    test_read_only_attachment_follows();
    test_own_read_only_window_inside_an_exported_range();
    test_move_keeps_bytes();
    test_fork_gives_a_private_copy();
    test_remove_makes_memory_private();
    test_fork_while_threads_free_and_move();
    test_hint_free_where_it_is_taken();
    test_hint_free_under_pressure();
    test_huge_pages_stay_huge();
    test_memory_hooks_told_of_replaced_pages(false);
    test_memory_hooks_told_of_replaced_pages(true);
    /* Last: it kills the broker. */
    test_unmap_after_broker_loss();
    broker_stop(&broker);
    return report_totals();
}
