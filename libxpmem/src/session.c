#include "session.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "address_space_file.h"
#include "attach_cache.h"
#include "attachments.h"
#include "autostart.h"
#include "backing.h"
#include "debug_log.h"
#include "event_thread.h"
#include "export_claims.h"
#include "exports.h"
#include "exporter_watch.h"
#include "fork_snapshot.h"
#include "grants.h"
#include "import_cache.h"
#include "import_faults.h"
#include "memory_pressure.h"
#include "private_area.h"
#include "socket_path.h"
#include "thread_stop.h"

/* How long a process that lost its broker keeps trying to connect again by itself. */
#define RECONNECT_GIVE_UP_NS (60LL * 1000000000LL)
/* How long racing processes wait for the broker one of them started. */
#define AUTOSTART_WAIT_NS (5LL * 1000000000LL)

static pthread_mutex_t session_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;
static struct channel channel = {.lock = PTHREAD_MUTEX_INITIALIZER, .socket = -1, .next_request_id = 1};
static bool connected;
static int event_socket = -1; /* our end of the event channel, served by the event thread */
static pthread_t event_thread;
static bool event_thread_running;
static _Atomic long live_segments;
/* The event thread saw its socket end while nobody was closing it: the broker went away. */
static _Atomic bool broker_lost;
/* drop_connection is ending the event thread itself: its socket's end is no news. */
static _Atomic bool dropping;
static _Atomic bool reconnecting;
/* CLOCK_MONOTONIC ns of the last connection that replaced an earlier one, and of the last loss of
 * the broker; 0 before any. */
static _Atomic long long reconnected_at_ns;
static _Atomic long long lost_at_ns;
static bool ever_connected;

static long long monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000000000LL + now.tv_nsec;
}

void session_segment_made(void) { live_segments++; }
bool session_segment_removed(void) { return --live_segments == 0; }

void session_discard_address_space(bool holding_exports)
{
    if (!holding_exports)
        exports_begin_restore();
    if (exports_list(NULL, 0) == 0) {
        backing_lock();
        address_space_file_discard();
        backing_unlock();
    }
    if (!holding_exports)
        exports_end_restore();
}

static void after_fork_in_child(void)
{
    /* The parent's connection, event thread and permits are the parent's: a child that calls the
     * API gets a connection and identity of its own. */
    fork_snapshot_child();
    pthread_mutex_init(&session_lock, NULL);
    pthread_mutex_init(&channel.lock, NULL);
    if (channel.socket >= 0)
        close(channel.socket);
    channel.socket = -1;
    channel.broken = true;
    if (event_thread_running && event_socket >= 0)
        close(event_socket);
    event_socket = -1;
    event_thread_running = false;
    connected = false;
    ever_connected = false;
    live_segments = 0;
    broker_lost = false;
    dropping = false;
    reconnecting = false;
    reconnected_at_ns = 0;
    lost_at_ns = 0;
    exports_reset_after_fork();
    grants_reset_after_fork();
    attachments_reset_after_fork();
    attach_cache_reset_after_fork();
    memory_pressure_reset_after_fork();
    import_cache_reset_after_fork();
    thread_stop_reset_after_fork();
    import_faults_forget();
    exporter_watch_forget();
    address_space_file_forget();
}

static void install_fork_handler(void)
{
    pthread_atfork(fork_snapshot_prepare, fork_snapshot_parent, after_fork_in_child);
}

static int connect_with_autostart(const char *path)
{
    if (channel_connect(&channel, path) == 0)
        return 0;
    int error = errno;
    if (error != ENOENT && error != ECONNREFUSED) {
        debug_log("cannot connect to the broker at %s: %s", path, strerror(error));
        return -1;
    }
    if (!autostart_allowed()) {
        debug_log("no broker answers at %s (%s) and XPMEM_AUTOSTART=0", path, strerror(error));
        errno = error;
        return -1;
    }
    if (autostart_broker(path) < 0)
        return -1;
    struct timespec started, now;
    clock_gettime(CLOCK_MONOTONIC, &started);
    for (;;) {
        if (channel_connect(&channel, path) == 0)
            return 0;
        error = errno;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long waited = (now.tv_sec - started.tv_sec) * 1000000000LL + (now.tv_nsec - started.tv_nsec);
        if ((error != ENOENT && error != ECONNREFUSED) || waited > AUTOSTART_WAIT_NS) {
            debug_log("the broker started for %s did not answer: %s (see xpmemd.log beside the socket)", path,
                      strerror(error));
            errno = error;
            return -1;
        }
        struct timespec pause = {0, 10 * 1000000};
        nanosleep(&pause, NULL);
    }
}

static int say_hello(void)
{
    uint8_t request[WIRE_MAX_REQUEST], reply_buffer[CHANNEL_SMALL_REPLY];
    char name[WIRE_MAX_NAME + 1];
    snprintf(name, sizeof name, "libxpmem %s", program_invocation_short_name);
    size_t length = wire_encode_hello(request, sizeof request, 0, name);
    struct wire_message reply;
    if (channel_call(&channel, request, length, NULL, 0, WIRE_WELCOME, reply_buffer, sizeof reply_buffer, &reply, NULL) < 0)
        return -1;
    return 0;
}

static int subscribe(void)
{
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
        return -1;
    uint8_t request[64], reply_buffer[CHANNEL_SMALL_REPLY];
    size_t length = wire_encode_subscribe(request, sizeof request, 0);
    struct wire_message reply;
    int result = channel_call(&channel, request, length, &pair[1], 1, WIRE_DONE, reply_buffer, sizeof reply_buffer,
                              &reply, NULL);
    close(pair[1]);
    if (result < 0) {
        close(pair[0]);
        return -1;
    }
    if (event_thread_start(pair[0], &event_thread) < 0) {
        int saved = errno;
        close(pair[0]);
        debug_log("cannot start the event thread: %s", strerror(saved));
        errno = saved;
        return -1;
    }
    event_socket = pair[0];
    event_thread_running = true;
    return 0;
}

/* The old connection is gone, and with it every id the broker gave us but the segments' own: those
 * the next connection claims back (restore_exports), permits get handles again when next used. */
static void drop_connection(void)
{
    pthread_mutex_lock(&channel.lock);
    channel_close(&channel);
    pthread_mutex_unlock(&channel.lock);
    if (event_thread_running) {
        /* Wakes the thread in case the broker has not closed its end yet. */
        dropping = true;
        shutdown(event_socket, SHUT_RDWR);
        pthread_join(event_thread, NULL);
        dropping = false;
        close(event_socket);
        event_thread_running = false;
        event_socket = -1;
    }
    grants_forget_handles();
    attachments_forget_broker_ids();
    /* What the next broker maps for an attach may differ: cached windows are not reused. */
    attachments_mark_all_stale();
    import_cache_forget_all();
    broker_lost = false;
    connected = false;
}

/* While windows of different modes are registered again one by one, a peer the narrowest does not
 * allow could get a wider one before the narrowest is back, and with it the file that reaches
 * both; and the new broker does not know the modes of windows removed while others lived, whose
 * memory is still in the file. A window of one page at address 0 with the modes all of them share
 * (their bitwise and), registered first and removed last, makes the broker refuse such a peer
 * meanwhile, and its removal leaves that mode with the broker as a removed window's. Returns its
 * segment id, 0 when the modes are all alike (nothing to guard), or UINT64_MAX when it was refused. */
static uint64_t register_floor_window(const struct export *all, size_t count)
{
    if (count == 0)
        return 0;
    uint32_t retired[01000];
    size_t retired_count = exports_retired_permits(retired, sizeof retired / sizeof retired[0]);
    uint32_t shared = all[0].permit;
    bool mixed = false;
    for (size_t index = 1; index < count; index++) {
        mixed = mixed || all[index].permit != all[0].permit;
        shared &= all[index].permit;
    }
    for (size_t index = 0; index < retired_count; index++) {
        mixed = mixed || retired[index] != all[0].permit;
        shared &= retired[index];
    }
    if (!mixed)
        return 0;
    struct export floor = {.base = 0, .length = (uint64_t)sysconf(_SC_PAGESIZE), .permit = shared};
    if (exports_draw_token(floor.token) < 0 || export_claims_send(&channel, &floor) < 0) {
        /* Without it the new broker could hand the file to whom a narrower window (or a removed one)
         * does not allow: this attempt fails, and the next connection tries again. */
        debug_log("the guard window for registering the windows again was refused: %m; trying again later");
        return UINT64_MAX;
    }
    return floor.segment;
}

static void remove_floor_window(uint64_t segment)
{
    uint8_t request[WIRE_MAX_REQUEST], reply_buffer[CHANNEL_SMALL_REPLY];
    struct wire_message reply;
    size_t length = wire_encode_remove(request, sizeof request, 0, segment);
    if (channel_call(&channel, request, length, NULL, 0, WIRE_DONE, reply_buffer, sizeof reply_buffer, &reply, NULL) < 0)
        debug_log("could not remove the guard window %llu: %m", (unsigned long long)segment);
}

/* Registers every segment this process exports with the new broker, under the ids it had. A
 * segment the broker refuses is gone (as if removed); a connection that fails meanwhile fails the
 * whole attempt, and the next one tries them all again. The exports lock is held alone (by
 * connect_session): no make or remove changes the list meanwhile. */
static int restore_exports(void)
{
    struct export listed[64];
    size_t count = exports_list(listed, 64);
    struct export *all = listed;
    if (count > 64) {
        all = malloc(count * sizeof *all);
        if (all == NULL)
            return -1;
        size_t capacity = count;
        count = exports_list(all, capacity);
        if (count > capacity)
            count = capacity;
    }
    int result = 0;
    uint64_t floor = register_floor_window(all, count);
    if (floor == UINT64_MAX) {
        if (all != listed)
            free(all);
        return -1;
    }
    for (size_t index = 0; index < count; index++) {
        if (export_claims_send(&channel, &all[index]) == 0) {
            debug_log("segment %llu registered again with the broker", (unsigned long long)all[index].segment);
            continue;
        }
        /* Only a refusal that will not change (the id is not ours to claim, the window is invalid,
         * the uid's quota is full) ends the segment; anything else (no descriptor to spare, a broker still busy with our old
         * connection, the connection lost) fails this attempt, and the next one tries again. */
        if (channel.broken || (errno != EACCES && errno != EPERM && errno != EINVAL && errno != ENOMEM)) {
            debug_log("registering segment %llu again failed: %m; trying again later", (unsigned long long)all[index].segment);
            result = -1;
            break;
        }
        debug_log("the broker refused to register segment %llu again: %m; it is removed",
                  (unsigned long long)all[index].segment);
        if (exports_remove(all[index].segment) && session_segment_removed() && exporter_watch_unback_all())
            session_discard_address_space(true);
    }
    if (floor != 0 && result == 0)
        remove_floor_window(floor);
    if (all != listed)
        free(all);
    return result;
}

static int connect_session(void)
{
    char path[256];
    if (socket_path_resolve(path, sizeof path) < 0) {
        debug_log("the broker's socket path is too long");
        return -1;
    }
    /* Held from before the new socket exists: a make or remove still in flight on the old connection
     * finishes first (the snapshot then has it), and none reaches the new broker before its
     * segments are registered again. */
    exports_begin_restore();
    if (connect_with_autostart(path) < 0) {
        int saved = errno;
        exports_end_restore();
        errno = saved;
        return -1;
    }
    if (say_hello() < 0 || subscribe() < 0 || restore_exports() < 0) {
        int saved = errno;
        drop_connection();
        exports_end_restore();
        errno = saved;
        return -1;
    }
    exports_end_restore();
    if (ever_connected) {
        reconnected_at_ns = monotonic_ns();
        import_faults_broker_back();
    }
    ever_connected = true;
    connected = true;
    return 0;
}

struct channel *session_channel(void)
{
    pthread_once(&fork_handler_once, install_fork_handler);
    pthread_mutex_lock(&session_lock);
    if (connected && (channel.broken || broker_lost)) {
        debug_log("the connection to the broker was lost; connecting again");
        drop_connection();
    }
    int result = connected ? 0 : connect_session();
    int saved = errno;
    pthread_mutex_unlock(&session_lock);
    if (result < 0) {
        errno = saved;
        return NULL;
    }
    return &channel;
}

bool session_reconnected_within(long long nanoseconds)
{
    long long at = reconnected_at_ns;
    return at != 0 && monotonic_ns() - at < nanoseconds;
}

bool session_settling_within(long long nanoseconds)
{
    long long lost = lost_at_ns;
    return (lost != 0 && monotonic_ns() - lost < nanoseconds) || session_reconnected_within(nanoseconds);
}

/* Connects again, with backoff, until it works or RECONNECT_GIVE_UP_NS passed: so that an exporter
 * registers its segments with a new broker before importers come asking for them. */
static void *reconnect(void *unused)
{
    (void)unused;
    bool connected_again;
    do {
        connected_again = false;
        struct timespec started, now;
        clock_gettime(CLOCK_MONOTONIC, &started);
        long pause_ms = 10;
        for (;;) {
            if (session_channel() != NULL) {
                debug_log("connected to the broker again");
                connected_again = true;
                break;
            }
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((now.tv_sec - started.tv_sec) * 1000000000LL + (now.tv_nsec - started.tv_nsec) > RECONNECT_GIVE_UP_NS) {
                debug_log("no broker came back; the next call tries again");
                break;
            }
            struct timespec pause = {pause_ms / 1000, (pause_ms % 1000) * 1000000};
            nanosleep(&pause, NULL);
            pause_ms = pause_ms * 2 > 500 ? 500 : pause_ms * 2;
        }
        reconnecting = false;
        /* A loss between our connection and the line above found `reconnecting` still set and left
         * the reconnection to us: take it, unless a thread of its own already did. */
    } while (connected_again && broker_lost && !atomic_exchange(&reconnecting, true));
    return NULL;
}

void session_broker_lost(void)
{
    if (dropping)
        return;
    broker_lost = true;
    lost_at_ns = monotonic_ns();
    if (live_segments == 0 && !grants_any())
        return; /* nothing to restore: the next call connects */
    bool expected = false;
    if (!atomic_compare_exchange_strong(&reconnecting, &expected, true))
        return;
    int error = thread_stop_start_stoppable("xpmem-reconnect", reconnect, NULL);
    if (error != 0) {
        reconnecting = false;
        debug_log("cannot start reconnecting: %s; the next call connects", strerror(error));
        return;
    }
}
