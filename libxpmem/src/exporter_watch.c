#include "exporter_watch.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "backing.h"
#include "debug_log.h"
#include "thread_stop.h"
#include "uffd.h"

static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static bool watch_tried;
static int watch_descriptor = -1;
/* Work handed to the watch thread: one byte in job_pipe asks for backing_unback_all, one byte back in
 * done_pipe says it is done. */
static int job_pipe[2] = {-1, -1}, done_pipe[2] = {-1, -1};
static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER;

/* The watch thread: acts on events as they come, for the life of the process (a thread unmapping
 * watched memory waits until its event is read, broker or no broker). */
/* Whether the last unback_all made every backed mapping private (read after it is done). */
static bool unback_succeeded;

static void run_unback_all(void)
{
    struct backing_result result;
    backing_unback_all(&result);
    if (result.code != 0)
        debug_log("making backed memory private again failed: %s", result.text);
    __atomic_store_n(&unback_succeeded, result.code == 0, __ATOMIC_RELEASE);
}

static void *serve_watch(void *unused)
{
    (void)unused;
    thread_stop_exempt_self(THREAD_STOP_WATCH_THREAD);
    struct private_area *area = private_area_get();
    for (;;) {
        struct pollfd watched[2] = {{.fd = watch_descriptor, .events = POLLIN}, {.fd = job_pipe[0], .events = POLLIN}};
        /* Events read during a stop that then failed wait in the queue: try again soon. */
        bool queued = area != NULL && area->watch->count > 0;
        int ready = poll(watched, 2, queued ? 100 : -1);
        if (ready < 0)
            continue; /* EINTR or ENOMEM: this thread must not end, unmapping threads wait on it */
        struct backing_result result;
        if (watched[0].revents != 0 || (ready == 0 && queued)) {
            backing_follow_changes(&result);
            if (result.code != 0)
                debug_log("following an unmap or move of backed memory failed: %s", result.text);
        }
        char job;
        if (watched[1].revents != 0 && read(job_pipe[0], &job, 1) == 1) {
            run_unback_all();
            (void)!write(done_pipe[1], &job, 1);
        }
    }
    return NULL;
}

static bool start_watch_thread(void)
{
    struct private_area *area = private_area_get();
    if (area == NULL || pipe2(job_pipe, O_CLOEXEC) < 0)
        return false;
    if (pipe2(done_pipe, O_CLOEXEC) < 0) {
        close(job_pipe[0]);
        close(job_pipe[1]);
        job_pipe[0] = job_pipe[1] = -1;
        return false;
    }
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstack(&attributes, area->watch_stack, area->watch_stack_size);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int error = thread_stop_start_exempt(THREAD_STOP_WATCH_THREAD, &thread, &attributes, serve_watch, NULL);
    pthread_attr_destroy(&attributes);
    if (error != 0) {
        errno = error;
        return false;
    }
    pthread_setname_np(thread, "xpmem-watch");
    return true;
}

static void open_watch(void)
{
    watch_tried = true;
    int descriptor = uffd_open(UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP);
    if (descriptor >= 0) {
        watch_descriptor = descriptor;
        if (start_watch_thread())
            return;
        watch_descriptor = -1;
        close(descriptor);
    }
    debug_log("cannot watch backed memory with userfaultfd (%s): importers will not follow this process's "
              "munmap/mremap of memory they attached",
              strerror(errno));
}

/* The first registration failure, told on the next exporter_watch_prepare: registering runs while
 * other threads are stopped, when stdio must not be used. */
static _Atomic int registration_error;
static _Atomic uint64_t registration_failed_at;

static void tell_registration_failure(void)
{
    static _Atomic bool told;
    if (registration_error != 0 && !told) {
        told = true;
        /* Before Linux 5.19 shmem has no write-protect mode; EBUSY: the application registered it. */
        debug_log("cannot watch backed memory at 0x%llx (%s): importers will not follow its munmap/mremap",
                  (unsigned long long)registration_failed_at, strerror(registration_error));
    }
}

bool exporter_watch_prepare(void)
{
    pthread_mutex_lock(&watch_lock);
    if (!watch_tried)
        open_watch();
    pthread_mutex_unlock(&watch_lock);
    tell_registration_failure();
    return watch_descriptor >= 0;
}

bool exporter_watch_unback_all(void)
{
    pthread_mutex_lock(&job_lock);
    __atomic_store_n(&unback_succeeded, false, __ATOMIC_RELEASE);
    char job = 'u';
    if (watch_descriptor >= 0 && job_pipe[1] >= 0) {
        if (write(job_pipe[1], &job, 1) == 1)
            while (read(done_pipe[0], &job, 1) < 0 && errno == EINTR) {
            }
    } else {
        /* No watch thread: its stack is free, and the caller's own stack may be backed memory. */
        struct private_area *area = private_area_get();
        if (area != NULL)
            private_area_run_on_stack(area->watch_stack, area->watch_stack_size, run_unback_all);
    }
    bool succeeded = __atomic_load_n(&unback_succeeded, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&job_lock);
    return succeeded;
}

void exporter_watch_forget(void)
{
    pthread_mutex_init(&watch_lock, NULL);
    pthread_mutex_init(&job_lock, NULL);
    for (int index = 0; index < 2; index++) {
        if (job_pipe[index] >= 0)
            close(job_pipe[index]);
        if (done_pipe[index] >= 0)
            close(done_pipe[index]);
        job_pipe[index] = done_pipe[index] = -1;
    }
    if (watch_descriptor >= 0)
        close(watch_descriptor);
    watch_descriptor = -1;
    watch_tried = false;
}

void exporter_watch_add(uint64_t start, uint64_t length)
{
    if (watch_descriptor >= 0 && length > 0 && uffd_register(watch_descriptor, start, length, UFFDIO_REGISTER_MODE_WP) < 0
        && registration_error == 0) {
        registration_failed_at = start;
        registration_error = errno != 0 ? errno : EINVAL;
    }
}


void exporter_watch_remove(uint64_t start, uint64_t length)
{
    if (watch_descriptor >= 0 && length > 0)
        uffd_unregister(watch_descriptor, start, length);
}

void exporter_watch_collect(struct private_area *area)
{
    if (watch_descriptor < 0)
        return;
    struct watch_queue *queue = area->watch;
    while (queue->count < MAX_WATCH_EVENTS) {
        struct uffd_msg message;
        ssize_t got = read(watch_descriptor, &message, sizeof message);
        if (got != (ssize_t)sizeof message)
            return; /* EAGAIN: nothing more pending */
        struct watch_event *event = &queue->events[queue->count];
        if (message.event == UFFD_EVENT_UNMAP) {
            event->kind = WATCH_UNMAPPED;
            event->from = message.arg.remove.start;
            event->length = message.arg.remove.end - message.arg.remove.start;
            event->to = 0;
        } else if (message.event == UFFD_EVENT_REMAP) {
            event->kind = WATCH_MOVED;
            event->from = message.arg.remap.from;
            event->to = message.arg.remap.to;
            event->length = message.arg.remap.len;
        } else {
            continue; /* no fault is ever raised in write-protect mode without protection */
        }
        queue->count++;
    }
}
