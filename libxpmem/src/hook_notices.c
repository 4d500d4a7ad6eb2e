#include "hook_notices.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "backing.h"
#include "debug_log.h"
#include "thread_stop.h"

/* One backing may leave up to WIRE_MAX_BACKED_EXTENTS (240) pieces. */
#define NOTICE_ROOM 256

struct notice_range {
    uint64_t start, end;
};

/* Under the backing lock. */
static struct notice_range recorded[NOTICE_ROOM];
static uint32_t recorded_count;
/* More ranges than the room: tell one span covering them all. */
static bool overflowed;
static struct notice_range overflow_span;
/* Whether anything is recorded: read without the backing lock by hook_notices_send, which every
 * event the event thread serves ends with, so that only events that replaced pages wake anyone. */
static _Atomic bool pending;

static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;
static int wake_descriptor = -1;
/* The process whose thread reads wake_descriptor. A fork child inherits the descriptor but not the
 * thread, and the library's fork handler is installed only once the process has connected: a
 * process that forked before that (after xpmem_hint_free, say) must not wake its parent's thread. */
static pid_t started_by;

void hook_notices_record(uint64_t start, uint64_t length)
{
    if (length == 0)
        return;
    atomic_store_explicit(&pending, true, memory_order_relaxed);
    uint64_t end = start + length;
    if (overflowed) {
        overflow_span.start = start < overflow_span.start ? start : overflow_span.start;
        overflow_span.end = end > overflow_span.end ? end : overflow_span.end;
        return;
    }
    if (recorded_count > 0 && recorded[recorded_count - 1].end == start) {
        recorded[recorded_count - 1].end = end;
        return;
    }
    if (recorded_count == NOTICE_ROOM) {
        overflowed = true;
        overflow_span = (struct notice_range){start, end};
        for (uint32_t index = 0; index < recorded_count; index++)
            hook_notices_record(recorded[index].start, recorded[index].end - recorded[index].start);
        recorded_count = 0;
        return;
    }
    recorded[recorded_count++] = (struct notice_range){start, end};
}

/* A function through which an MPI stack's memory hooks hear of memory changed behind them. */
struct hook_receiver {
    const char *symbol;
    /* Tried with RTLD_NOLOAD when the symbol is not global (a component loaded it RTLD_LOCAL), or NULL. */
    const char *library;
    const char *stack;
    void (*call)(void *function, uint64_t start, uint64_t length);
    /* The environment variable that must be 1 for this receiver to be told, or NULL: told always. */
    const char *opt_in;
    _Atomic bool said; /* XPMEM_DEBUG said it was told, once (tellers may run at once) */
};

static void call_ucm_vm_munmap(void *function, uint64_t start, uint64_t length)
{
    ((void (*)(void *, size_t))function)((void *)(uintptr_t)start, (size_t)length);
}

/* As Open MPI's own hooks call it for an munmap (from_alloc false): its registration caches outside
 * UCX (grdma, for pml ob1 over a network card) drop what they registered there. Only when asked
 * (XPMEM_TELL_OPEN_MPI=1): Open MPI takes the call for the application unmapping memory, and ends the
 * process (_exit, "cannot deregister in-use memory") where a registration in the range is in use by a
 * communication; and it may be called while MPI_Finalize tears those caches down, which its own hooks
 * never race with a thread of ours. Where Open MPI forwards its hooks to UCX
 * (opal_common_ucx_opal_mem_hooks, the default from 5.0), UCX hears twice: harmless. */
static void call_opal_release_hook(void *function, uint64_t start, uint64_t length)
{
    ((void (*)(void *, size_t, bool))function)((void *)(uintptr_t)start, (size_t)length, false);
}

/* Told in this order: once UCX has heard of a range, so has Open MPI if it is told at all (the
 * tests rely on it). */
static struct hook_receiver receivers[] = {
    {.symbol = "opal_mem_hooks_release_hook", .library = NULL, .stack = "Open MPI", .call = call_opal_release_hook,
     .opt_in = "XPMEM_TELL_OPEN_MPI"},
    {.symbol = "ucm_vm_munmap", .library = "libucm.so.0", .stack = "UCX", .call = call_ucm_vm_munmap},
};

/* The receiver's function, where its stack is loaded: found globally, or in its library loaded
 * privately. A reference to the library that holds it (*library) is taken until the call is done,
 * so that no dlclose elsewhere unloads it meanwhile. Looked up each time: MPI stacks are often
 * loaded after this library, and by most programs not at all. */
static void *find_receiver(const struct hook_receiver *receiver, void **library)
{
    void *found = dlsym(RTLD_DEFAULT, receiver->symbol);
    Dl_info where;
    if (found != NULL) {
        *library = dladdr(found, &where) != 0 && where.dli_fname != NULL ? dlopen(where.dli_fname, RTLD_LAZY | RTLD_NOLOAD)
                                                                         : NULL;
        return found;
    }
    *library = receiver->library == NULL ? NULL : dlopen(receiver->library, RTLD_LAZY | RTLD_NOLOAD);
    return *library == NULL ? NULL : dlsym(*library, receiver->symbol);
}

/* Read at each telling (rare), so that a fork child sees its own environment. */
static bool opted_in(const struct hook_receiver *receiver)
{
    if (receiver->opt_in == NULL)
        return true;
    const char *value = getenv(receiver->opt_in);
    return value != NULL && strcmp(value, "1") == 0;
}

static void tell(const struct notice_range *ranges, uint32_t count)
{
    if (count == 0)
        return;
    for (size_t which = 0; which < sizeof receivers / sizeof receivers[0]; which++) {
        struct hook_receiver *receiver = &receivers[which];
        if (!opted_in(receiver))
            continue;
        void *library;
        void *function = find_receiver(receiver, &library);
        if (function != NULL) {
            if (!atomic_exchange_explicit(&receiver->said, true, memory_order_relaxed))
                debug_log("telling %s's memory hooks (%s) of the pages backing and unbacking replace", receiver->stack,
                          receiver->symbol);
            for (uint32_t index = 0; index < count; index++)
                receiver->call(function, ranges[index].start, ranges[index].end - ranges[index].start);
        }
        if (library != NULL)
            dlclose(library); /* the reference NOLOAD took */
    }
}

/* Under the backing lock: moves what was recorded into `taken`; returns how many ranges. */
static uint32_t take_recorded(struct notice_range *taken)
{
    uint32_t count = overflowed ? 1 : recorded_count;
    if (overflowed)
        taken[0] = overflow_span;
    else
        memcpy(taken, recorded, count * sizeof taken[0]);
    recorded_count = 0;
    overflowed = false;
    atomic_store_explicit(&pending, false, memory_order_relaxed);
    return count;
}

static void *serve_notices(void *argument)
{
    int descriptor = (int)(intptr_t)argument;
    static struct notice_range taken[NOTICE_ROOM];
    for (;;) {
        uint64_t wakes;
        if (read(descriptor, &wakes, sizeof wakes) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        backing_lock();
        uint32_t count = take_recorded(taken);
        backing_unlock();
        tell(taken, count);
    }
    int error = errno;
    pthread_mutex_lock(&start_lock);
    if (wake_descriptor == descriptor) {
        wake_descriptor = -1; /* the next start makes another */
        close(descriptor);
    }
    pthread_mutex_unlock(&start_lock);
    debug_log("the memory-hook notices thread stopped: %s", strerror(error));
    return NULL;
}

void hook_notices_start(void)
{
    pthread_mutex_lock(&start_lock);
    /* Inherited from a parent that forked before the library's fork handler was installed: that
     * descriptor wakes the parent's thread. Forgotten, not closed: the number may be the
     * application's by now. */
    if (wake_descriptor >= 0 && started_by != getpid())
        wake_descriptor = -1;
    if (wake_descriptor < 0) {
        int descriptor = eventfd(0, EFD_CLOEXEC);
        int error = descriptor < 0 ? errno
                                   : thread_stop_start_stoppable("xpmem-notices", serve_notices,
                                                                 (void *)(intptr_t)descriptor);
        if (error == 0) {
            wake_descriptor = descriptor;
            started_by = getpid();
        } else {
            if (descriptor >= 0)
                close(descriptor);
            debug_log("cannot start the memory-hook notices thread (%s): UCX hears of replaced pages only when "
                      "xpmem_hint_free tells it",
                      strerror(error));
        }
    }
    pthread_mutex_unlock(&start_lock);
}

void hook_notices_send(void)
{
    /* Recorded by this very thread before it released the backing lock, if by anyone it must tell. */
    if (!atomic_load_explicit(&pending, memory_order_relaxed))
        return;
    pthread_mutex_lock(&start_lock);
    int descriptor = started_by == getpid() ? wake_descriptor : -1;
    pthread_mutex_unlock(&start_lock);
    if (descriptor >= 0)
        (void)!eventfd_write(descriptor, 1);
}

/* For hook_notices_tell_now's ranges, which may be told by several application threads at once. */
static pthread_mutex_t tell_now_lock = PTHREAD_MUTEX_INITIALIZER;

void hook_notices_tell_now(void)
{
    static struct notice_range taken[NOTICE_ROOM];
    pthread_mutex_lock(&tell_now_lock);
    backing_lock();
    uint32_t count = take_recorded(taken);
    backing_unlock();
    tell(taken, count);
    pthread_mutex_unlock(&tell_now_lock);
}

void hook_notices_reset_after_fork(void)
{
    pthread_mutex_init(&start_lock, NULL);
    pthread_mutex_init(&tell_now_lock, NULL);
    /* The parent's thread is not here; its descriptor is closed, the child's own made on demand. */
    if (wake_descriptor >= 0)
        close(wake_descriptor);
    wake_descriptor = -1;
    recorded_count = 0;
    overflowed = false;
    pending = false;
}
