#include "thread_stop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "exporter_watch.h"

/* Read by the handler; written once, before the handler is installed. */
static struct thread_stop_control *control;
static int stop_signal = -1;
static pthread_mutex_t prepare_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned last_parked, last_left_running;

#define ARRIVAL_DEADLINE_NS (5LL * 1000000000LL)
/* After this long a missing thread is examined: does it block the signal, is it exiting? */
#define EXAMINE_AFTER_NS (20LL * 1000000LL)

static long futex(_Atomic uint32_t *word, int operation, uint32_t value, const struct timespec *timeout)
{
    return syscall(SYS_futex, (uint32_t *)word, operation, value, timeout, NULL, 0);
}

/* Has the stop `generation` been released? Stops are released in order, and a later release
 * releases the earlier ones too. A parked thread not scheduled between its stop's release and the
 * end of the next stop (which, after 20 ms, takes a thread still in the handler for one that blocks
 * the signal and goes on without it) used to wait for `released` to equal its generation again,
 * which never happened: it stayed in the handler for good (the fork test's main thread, holding
 * malloc's lock in fork(), on a loaded machine). Serial-number arithmetic, for the counter's wrap. */
static bool is_released(uint32_t released, uint32_t generation) { return (int32_t)(released - generation) >= 0; }

static void park(int signal_number)
{
    (void)signal_number;
    int saved_errno = errno;
    atomic_fetch_add(&control->in_handler, 1);
    uint32_t generation = atomic_load(&control->generation);
    pid_t self = (pid_t)syscall(SYS_gettid);
    uint32_t count = atomic_load_explicit(&control->count, memory_order_acquire);
    for (uint32_t index = 0; index < count; index++) {
        if (control->tids[index] == self) {
            atomic_store(&control->arrived[index], generation);
            break;
        }
    }
    atomic_fetch_add(&control->arrivals, 1);
    futex(&control->arrivals, FUTEX_WAKE_PRIVATE, 1, NULL);
    for (;;) {
        uint32_t released = atomic_load(&control->released);
        if (is_released(released, generation))
            break;
        futex(&control->released, FUTEX_WAIT_PRIVATE, released, NULL);
    }
    /* No wake for the stopper waiting on this (wait_for_departures polls): a wake could hand it the
     * CPU before this thread is back in its own code, and it would be signalled again first. */
    atomic_fetch_sub(&control->in_handler, 1);
    errno = saved_errno;
}

static bool signal_is_free(int candidate)
{
    struct sigaction current;
    if (sigaction(candidate, NULL, &current) < 0)
        return false;
    return (current.sa_flags & SA_SIGINFO) == 0 && current.sa_handler == SIG_DFL;
}

static int choose_signal(void)
{
    const char *chosen = getenv("XPMEM_STOP_SIGNAL");
    if (chosen != NULL && chosen[0] != '\0') {
        int value = atoi(chosen);
        if (value >= SIGRTMIN && value <= SIGRTMAX)
            return value;
    }
    for (int candidate = SIGRTMAX - 4; candidate >= SIGRTMIN + 4; candidate--)
        if (signal_is_free(candidate))
            return candidate;
    errno = EBUSY;
    return -1;
}

int thread_stop_prepare(struct private_area *area)
{
    pthread_mutex_lock(&prepare_lock);
    if (stop_signal < 0) {
        control = area->stop;
        int chosen = choose_signal();
        if (chosen > 0) {
            struct sigaction action;
            memset(&action, 0, sizeof action);
            action.sa_handler = park;
            action.sa_flags = SA_RESTART;
            /* Nothing else runs on a parked thread's stack while backing may be copying it. */
            sigfillset(&action.sa_mask);
            if (sigaction(chosen, &action, NULL) == 0)
                stop_signal = chosen;
        }
    }
    int result = stop_signal;
    pthread_mutex_unlock(&prepare_lock);
    return result;
}

static long long now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

/* Formats /proc/self/task/TID/status without stdio (other threads may hold its locks). */
static void task_status_path(char *path, pid_t tid)
{
    static const char prefix[] = "/proc/self/task/";
    memcpy(path, prefix, sizeof prefix - 1);
    char digits[16];
    int length = 0;
    do {
        digits[length++] = (char)('0' + tid % 10);
        tid /= 10;
    } while (tid > 0);
    char *cursor = path + sizeof prefix - 1;
    while (length > 0)
        *cursor++ = digits[--length];
    memcpy(cursor, "/status", 8);
}

/* A thread that blocks the signal, or is exiting, will never arrive: say so. */
static bool cannot_arrive(struct private_area *area, pid_t tid)
{
    char path[64];
    task_status_path(path, tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true; /* gone */
    ssize_t length = read(fd, area->status_buffer, 4095);
    close(fd);
    if (length <= 0)
        return true;
    area->status_buffer[length] = '\0';
    const char *state = strstr(area->status_buffer, "\nState:\t");
    if (state != NULL && (state[8] == 'Z' || state[8] == 'X'))
        return true;
    const char *blocked = strstr(area->status_buffer, "\nSigBlk:\t");
    if (blocked == NULL)
        return false;
    unsigned long long mask = strtoull(blocked + 9, NULL, 16);
    return (mask >> (stop_signal - 1)) & 1;
}

static bool already_listed(const struct thread_stop_control *stop, uint32_t count, pid_t tid)
{
    for (uint32_t index = 0; index < count; index++)
        if (stop->tids[index] == tid)
            return true;
    return false;
}

/* Signals every task not yet listed; returns how many were new, or -1 (too many threads). */
static int signal_new_tasks(struct private_area *area, uint32_t generation)
{
    struct thread_stop_control *stop = area->stop;
    pid_t self = (pid_t)syscall(SYS_gettid);
    pid_t process = getpid();
    int directory = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory < 0)
        return -1;
    int added = 0;
    for (;;) {
        long length = syscall(SYS_getdents64, directory, area->directory_buffer, DIRECTORY_BUFFER_SIZE);
        if (length <= 0)
            break;
        for (long offset = 0; offset < length;) {
            struct dirent64 *entry = (struct dirent64 *)(area->directory_buffer + offset);
            offset += entry->d_reclen;
            if (entry->d_name[0] < '0' || entry->d_name[0] > '9')
                continue;
            pid_t tid = (pid_t)strtol(entry->d_name, NULL, 10);
            uint32_t count = atomic_load(&stop->count);
            if (tid == self || tid == atomic_load(&stop->exempt[0]) || tid == atomic_load(&stop->exempt[1])
                || already_listed(stop, count, tid))
                continue;
            if (count == MAX_STOPPED_THREADS) {
                close(directory);
                errno = EBUSY;
                return -1;
            }
            stop->tids[count] = tid;
            atomic_store(&stop->arrived[count], 0);
            atomic_store_explicit(&stop->count, count + 1, memory_order_release);
            if (syscall(SYS_tgkill, process, tid, stop_signal) < 0)
                atomic_store(&stop->arrived[count], generation); /* it exited meanwhile */
            added++;
        }
    }
    close(directory);
    return added;
}

/* Waits until every listed thread arrived or cannot; false at the deadline. */
static bool wait_for_arrivals(struct private_area *area, uint32_t generation, long long started, unsigned *left)
{
    struct thread_stop_control *stop = area->stop;
    bool examined[64] = {false};
    for (;;) {
        uint32_t seen = atomic_load(&stop->arrivals);
        uint32_t count = atomic_load(&stop->count);
        bool all = true;
        long long elapsed = now_ns() - started;
        for (uint32_t index = 0; index < count; index++) {
            if (atomic_load(&stop->arrived[index]) == generation)
                continue;
            if (elapsed > EXAMINE_AFTER_NS && (index >= 64 || !examined[index])) {
                if (index < 64)
                    examined[index] = true;
                if (cannot_arrive(area, stop->tids[index])) {
                    /* Mark with a value no handler writes, so it counts as settled, not parked. */
                    atomic_store(&stop->arrived[index], generation);
                    (*left)++;
                    continue;
                }
            }
            all = false;
        }
        if (all)
            return true;
        if (elapsed > ARRIVAL_DEADLINE_NS)
            return false;
        /* A thread in munmap/mremap of watched memory waits for its event to be read, and cannot
         * take the stop signal until it is: read them (it then stops on its way back). */
        exporter_watch_collect(area);
        struct timespec timeout = {0, 1000000}; /* re-examine at least every millisecond */
        futex(&stop->arrivals, FUTEX_WAIT_PRIVATE, seen, &timeout);
    }
}

void thread_stop_reset_after_fork(void)
{
    struct private_area *area = private_area_get();
    if (area == NULL)
        return;
    /* The parent's library threads do not exist here (and their tids may be reused); nor do the
     * events it had read. */
    atomic_store(&area->stop->exempt[0], 0);
    atomic_store(&area->stop->exempt[1], 0);
    /* Threads of the parent that were inside the handler are not here to leave it. */
    atomic_store(&area->stop->in_handler, 0);
    area->watch->count = 0;
}

void thread_stop_exempt_self(int slot)
{
    struct private_area *area = private_area_get();
    if (area == NULL)
        return;
    atomic_store(&area->stop->exempt[slot], (pid_t)syscall(SYS_gettid));
    futex((_Atomic uint32_t *)&area->stop->exempt[slot], FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
}

/* pthread_create with `mask` as the new thread's signal mask (it inherits the creator's). */
static int create_masked(pthread_t *thread, const pthread_attr_t *attributes, void *(*body)(void *), void *argument,
                         const sigset_t *mask)
{
    sigset_t previous;
    pthread_sigmask(SIG_SETMASK, mask, &previous);
    int error = pthread_create(thread, attributes, body, argument);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    return error;
}

int thread_stop_start_exempt(int slot, pthread_t *thread, const pthread_attr_t *attributes, void *(*body)(void *),
                             void *argument)
{
    struct private_area *area = private_area_get();
    _Atomic pid_t *exempt = area != NULL ? &area->stop->exempt[slot] : NULL;
    if (exempt != NULL)
        atomic_store(exempt, 0);
    sigset_t all;
    sigfillset(&all);
    int error = create_masked(thread, attributes, body, argument, &all);
    /* Until the thread has recorded itself, a stop would signal it, wait the 20 ms after which
     * missing threads are examined, and find it blocking the signal: a creator pinned to one CPU
     * (an MPI rank bound to a core) does not let it run before the stop that created it begins.
     * Bounded (1 s): a thread that never recorded itself would cost later stops 20 ms each, not
     * hang its creator. */
    for (int wait = 0; error == 0 && exempt != NULL && atomic_load(exempt) == 0 && wait < 100; wait++) {
        struct timespec timeout = {0, 10000000};
        futex((_Atomic uint32_t *)exempt, FUTEX_WAIT_PRIVATE, 0, &timeout);
    }
    return error;
}

int thread_stop_start_stoppable(const char *name, void *(*body)(void *), void *argument)
{
    struct private_area *area = private_area_get();
    int signal_number = area != NULL ? thread_stop_prepare(area) : -1;
    sigset_t mask;
    sigfillset(&mask);
    /* Faults the thread itself causes must still reach it (or kill the process as usual). */
    sigdelset(&mask, SIGBUS);
    sigdelset(&mask, SIGSEGV);
    if (signal_number > 0)
        sigdelset(&mask, signal_number);
    /* Joinable until named: a detached thread may have ended, and its handle gone, before the name. */
    pthread_t thread;
    int error = create_masked(&thread, NULL, body, argument, &mask);
    if (error == 0) {
        pthread_setname_np(thread, name);
        pthread_detach(thread);
    }
    return error;
}

/* Waits until every thread the last stop parked has left the handler, before signalling anyone
 * again. Stops can follow each other closely (each mremap of watched memory raises one), and a
 * thread slow to be scheduled (a loaded machine) used to get the next stop's signal while still in
 * the handler: it left the handler only to enter it again at once, running little or none of its
 * own code in between, and the new stop counted it as a thread that blocks the signal (the handler
 * blocks every signal) and reported it "left running". Waiting gives each thread its turn between
 * two stops; after the arrival deadline (a thread held by a debugger, say) the stop fails as a late
 * arrival does. */
static bool wait_for_departures(struct thread_stop_control *stop, long long started)
{
    while (atomic_load(&stop->in_handler) != 0) {
        if (now_ns() - started > ARRIVAL_DEADLINE_NS)
            return false;
        struct timespec pause = {0, 100000};
        nanosleep(&pause, NULL);
    }
    return true;
}

int thread_stop_all(struct private_area *area)
{
    struct thread_stop_control *stop = area->stop;
    long long started = now_ns();
    if (!wait_for_departures(stop, started)) {
        errno = EBUSY;
        return -1;
    }
    uint32_t generation = atomic_load(&stop->generation) + 1;
    if (generation == 0)
        generation = 1;
    atomic_store(&stop->count, 0);
    atomic_store(&stop->generation, generation);
    unsigned left = 0;
    for (;;) {
        int added = signal_new_tasks(area, generation);
        if (added < 0) {
            thread_stop_release(area);
            return -1;
        }
        if (!wait_for_arrivals(area, generation, started, &left)) {
            thread_stop_release(area);
            errno = EBUSY;
            return -1;
        }
        /* A thread being created while we listed appears only now; stop it too. */
        if (added == 0)
            break;
    }
    last_parked = atomic_load(&stop->count) - left;
    last_left_running = left;
    return 0;
}

void thread_stop_release(struct private_area *area)
{
    struct thread_stop_control *stop = area->stop;
    atomic_store(&stop->released, atomic_load(&stop->generation));
    futex(&stop->released, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
}

void thread_stop_last_counts(unsigned *parked, unsigned *left_running)
{
    *parked = last_parked;
    *left_running = last_left_running;
}
