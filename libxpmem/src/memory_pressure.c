#include "memory_pressure.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup_path.h"
#include "debug_log.h"
#include "private_area.h"
#include "thread_stop.h"

static _Atomic bool started;
static _Atomic int state = MEMORY_PRESSURE_NOT_STARTED;
static _Atomic unsigned long long events;
static void (*callback)(double some_avg10);
/* The trigger's descriptor, owned by the thread; -1 when none. */
static int trigger_descriptor = -1;

enum memory_pressure_state memory_pressure_state(void) { return (enum memory_pressure_state)state; }
unsigned long long memory_pressure_events(void) { return events; }

/* The whole of a /proc text file, NUL-terminated, in memory the caller frees; NULL when it cannot be
 * read or is larger than a megabyte (a mountinfo of thousands of mounts is still far below). */
static char *read_text(const char *path)
{
    int descriptor = open(path, O_RDONLY | O_CLOEXEC);
    if (descriptor < 0)
        return NULL;
    size_t capacity = 16384, length = 0;
    char *text = malloc(capacity);
    while (text != NULL) {
        if (length + 1 == capacity) {
            char *larger = capacity < (1u << 20) ? realloc(text, capacity * 2) : NULL;
            if (larger == NULL) {
                free(text);
                text = NULL;
                break;
            }
            text = larger;
            capacity *= 2;
        }
        ssize_t got = read(descriptor, text + length, capacity - 1 - length);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            free(text);
            text = NULL;
            break;
        }
        if (got == 0) {
            text[length] = '\0';
            break;
        }
        length += (size_t)got;
    }
    close(descriptor);
    return text;
}

/* The cgroup v2 memory.pressure of this process's cgroup (cgroup_path.h). */
static bool cgroup_pressure_path(char *path, size_t capacity)
{
    char *cgroups = read_text("/proc/self/cgroup");
    char *mountinfo = cgroups != NULL ? read_text("/proc/self/mountinfo") : NULL;
    bool found = mountinfo != NULL && cgroup_pressure_path_from(cgroups, mountinfo, path, capacity);
    free(cgroups);
    free(mountinfo);
    return found;
}

/* Opens `path` and arms a trigger on it; the descriptor, or -1. */
static int arm_trigger(const char *path)
{
    /* Unprivileged processes may only use windows that are multiples of 2 s (Linux 6.5 and later). */
    static const char *const triggers[] = {"some 150000 1000000", "some 300000 2000000"};
    int descriptor = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (descriptor < 0) {
        debug_log("memory pressure: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    for (size_t index = 0; index < sizeof triggers / sizeof triggers[0]; index++) {
        if (write(descriptor, triggers[index], strlen(triggers[index]) + 1) >= 0) {
            debug_log("memory pressure: watching %s (trigger \"%s\")", path, triggers[index]);
            return descriptor;
        }
        debug_log("memory pressure: %s refuses the trigger \"%s\": %s", path, triggers[index], strerror(errno));
        if (errno != EINVAL && errno != EPERM)
            break;
    }
    close(descriptor);
    return -1;
}

/* The "some avg10=" figure of the file behind `descriptor`, or 0 when it cannot be read. */
static double some_avg10(int descriptor)
{
    char text[256];
    ssize_t length = pread(descriptor, text, sizeof text - 1, 0);
    if (length <= 0)
        return 0;
    text[length] = '\0';
    const char *at = strstr(text, "some avg10=");
    return at == NULL ? 0 : strtod(at + strlen("some avg10="), NULL);
}

static void *watch(void *argument)
{
    int descriptor = (int)(intptr_t)argument;
    for (;;) {
        struct pollfd wait = {.fd = descriptor, .events = POLLPRI};
        if (poll(&wait, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            debug_log("memory pressure: poll failed: %s; no more pressure eviction", strerror(errno));
            break;
        }
        if (wait.revents & (POLLERR | POLLNVAL)) {
            debug_log("memory pressure: the trigger ended (its cgroup went away?); no more pressure eviction");
            break;
        }
        if (wait.revents & POLLPRI) {
            events++;
            callback(some_avg10(descriptor));
        }
    }
    trigger_descriptor = -1;
    close(descriptor);
    state = MEMORY_PRESSURE_UNAVAILABLE;
    return NULL;
}

void memory_pressure_watch(void (*on_pressure)(double some_avg10))
{
    if (started || atomic_exchange(&started, true))
        return;
    callback = on_pressure;
    char path[4096];
    int descriptor = -1;
    if (cgroup_pressure_path(path, sizeof path))
        descriptor = arm_trigger(path);
    if (descriptor < 0)
        descriptor = arm_trigger("/proc/pressure/memory");
    if (descriptor < 0) {
        debug_log("memory pressure: no PSI trigger could be set; cached attachments are evicted by their bounds "
                  "only, never for pressure");
        state = MEMORY_PRESSURE_UNAVAILABLE;
        return;
    }
    trigger_descriptor = descriptor;
    state = MEMORY_PRESSURE_WATCHING;
    int error = thread_stop_start_stoppable("xpmem-pressure", watch, (void *)(intptr_t)descriptor);
    if (error != 0) {
        debug_log("memory pressure: cannot start the watch thread: %s; no pressure eviction", strerror(error));
        trigger_descriptor = -1;
        close(descriptor);
        state = MEMORY_PRESSURE_UNAVAILABLE;
        return;
    }
}

void memory_pressure_reset_after_fork(void)
{
    /* The copy of the parent's trigger descriptor: closing it leaves the parent's trigger armed. */
    if (trigger_descriptor >= 0)
        close(trigger_descriptor);
    trigger_descriptor = -1;
    started = false;
    state = MEMORY_PRESSURE_NOT_STARTED;
    events = 0;
}
