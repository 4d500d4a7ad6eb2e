/* Unit tests of the library's internals that need no broker: frame bytes against the broker's
 * golden frames and the spec, malformed frames, error mapping, the maps parser, the import cache,
 * stopping threads. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "broker_errors.h"
#include "import_cache.h"
#include "private_area.h"
#include "proc_maps.h"
#include "test_report.h"
#include "thread_stop.h"
#include "wire.h"

static bool same_bytes(const uint8_t *actual, size_t actual_length, const uint8_t *expected, size_t expected_length)
{
    return actual_length == expected_length && memcmp(actual, expected, expected_length) == 0;
}

static void test_get_matches_broker_golden(void)
{
    static const uint8_t expected[] = {
        0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00, 0x04, 0x00, 0x05, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00,
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x01,
    };
    uint8_t buffer[64];
    size_t length = wire_encode_get(buffer, sizeof buffer, 5, 0x0102030405060708ULL, WIRE_READ_ONLY);
    report("wire: get frame matches the broker's golden bytes", same_bytes(buffer, length, expected, sizeof expected),
           "length %zu", length);
}

static void test_range_backed_matches_broker_golden(void)
{
    static const uint8_t expected[] = {
        0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00, 0x02, 0x20, 0x00, 0x00, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00,
        0x11, 0, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x10, 0, 0, 0, 0, 0, 0, 0x00, 0x20, 0, 0, 0, 0, 0, 0,
    };
    struct wire_extent extent = {0x1000, 0x2000};
    uint8_t buffer[128];
    size_t length = wire_encode_range_backed(buffer, sizeof buffer, 0x11, 2, 0, "", &extent, 1);
    report("wire: rangeBacked frame matches the broker's golden bytes", same_bytes(buffer, length, expected, sizeof expected),
           "length %zu", length);
}

static void test_make_address_space_layout(void)
{
    static const uint8_t expected[] = {
        0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00, 0x0F, 0x00, 0x07, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00,
        0, 0, 0, 0, 0, 0, 0, 0,                  /* base 0 */
        0, 0, 0, 0, 0, 0x80, 0, 0,               /* size 2^47 */
        0x80, 0x01, 0x00, 0x00,                  /* permit 0600 */
        0x01, 0x00, 'x',                         /* name "x" */
    };
    uint8_t buffer[128];
    size_t length = wire_encode_make_address_space(buffer, sizeof buffer, 7, 0, UINT64_C(1) << 47, 0600, "x");
    report("wire: makeAddressSpace frame layout", same_bytes(buffer, length, expected, sizeof expected), "length %zu", length);
}

static void test_claim_address_space_layout(void)
{
    /* The same bytes as the broker's GoldenFrameTests.claimAddressSpaceFrame. */
    static const uint8_t expected[] = {
        0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00, 0x12, 0x00, 0x07, 0x00, 0x00, 0x00, 0x2F, 0x00, 0x00, 0x00,
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* segment id */
        0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, /* token, high half */
        0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21, /* token, low half */
        0, 0, 0, 0, 0, 0x7F, 0, 0,                      /* base */
        0, 0, 0x01, 0, 0, 0, 0, 0,                      /* size */
        0x80, 0x01, 0x00, 0x00,                         /* permit 0600 */
        0x01, 0x00, 'x',                                /* name "x" */
    };
    const uint64_t token[2] = {UINT64_C(0x1112131415161718), UINT64_C(0x2122232425262728)};
    uint8_t buffer[128];
    size_t length = wire_encode_claim_address_space(buffer, sizeof buffer, 7, UINT64_C(0x0102030405060708), token,
                                                    UINT64_C(0x7F0000000000), 0x10000, 0600, "x");
    report("wire: claimAddressSpace frame matches the broker's golden bytes",
           same_bytes(buffer, length, expected, sizeof expected), "length %zu", length);
}

static void test_report_attach_cache_layout(void)
{
    /* The same bytes as the broker's GoldenFrameTests.reportAttachCacheFrame. */
    static const uint8_t expected[] = {
        0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00, 0x14, 0x00, 0x09, 0x00, 0x00, 0x00, 0x30, 0x00, 0x00, 0x00,
        1, 0, 0, 0, 0, 0, 0, 0,                         /* hits */
        2, 0, 0, 0, 0, 0, 0, 0,                         /* misses */
        3, 0, 0, 0, 0, 0, 0, 0,                         /* evictions by capacity */
        4, 0, 0, 0, 0, 0, 0, 0,                         /* evictions by pressure */
        5, 0, 0, 0, 0, 0, 0, 0,                         /* entries */
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* bytes */
    };
    struct wire_attach_cache_counters counters = {.hits = 1, .misses = 2, .capacity_evictions = 3,
                                                  .pressure_evictions = 4, .entries = 5,
                                                  .bytes = UINT64_C(0x0102030405060708)};
    uint8_t buffer[128];
    size_t length = wire_encode_report_attach_cache(buffer, sizeof buffer, 9, &counters);
    report("wire: reportAttachCache frame matches the broker's golden bytes",
           same_bytes(buffer, length, expected, sizeof expected), "length %zu", length);
    report("wire: reportAttachCache does not fit a short buffer",
           wire_encode_report_attach_cache(buffer, 40, 9, &counters) == 0, "encoded into 40 bytes");
}

static void test_small_requests(void)
{
    uint8_t buffer[128];
    static const uint8_t hello[] = {0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00, 0x01, 0x00, 0x01, 0, 0, 0, 0x04, 0, 0, 0,
                                    0x02, 0x00, 'a', 'b'};
    size_t length = wire_encode_hello(buffer, sizeof buffer, 1, "ab");
    report("wire: hello frame", same_bytes(buffer, length, hello, sizeof hello), "length %zu", length);

    static const uint8_t attach[] = {0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00, 0x06, 0x00, 0x02, 0, 0, 0, 0x18, 0, 0, 0,
                                     0x09, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0};
    length = wire_encode_attach(buffer, sizeof buffer, 2, 9, 0x1000, 0x10000);
    report("wire: attach frame", same_bytes(buffer, length, attach, sizeof attach), "length %zu", length);

    static const uint8_t subscribe[] = {0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00, 0x0B, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0};
    length = wire_encode_subscribe(buffer, sizeof buffer, 3);
    report("wire: subscribe frame", same_bytes(buffer, length, subscribe, sizeof subscribe), "length %zu", length);

    static const uint8_t acknowledge[] = {0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00, 0x01, 0x20, 0, 0, 0, 0, 0x10, 0, 0, 0,
                                          0x22, 0, 0, 0, 0, 0, 0, 0, 0x05, 0, 0, 0, 0, 0, 0, 0};
    length = wire_encode_acknowledge(buffer, sizeof buffer, 0x22, 5);
    report("wire: acknowledge frame", same_bytes(buffer, length, acknowledge, sizeof acknowledge), "length %zu", length);

    length = wire_encode_remove(buffer, 20, 1, 1);
    report("wire: a frame that does not fit is refused", length == 0, "length %zu", length);
}

static void test_string_cut_on_character_boundary(void)
{
    char name[400];
    name[0] = 'a';
    size_t at = 1;
    while (at + 2 < 302) {
        name[at++] = (char)0xC3;
        name[at++] = (char)0xA9; /* é */
    }
    name[at] = '\0';
    uint8_t buffer[512];
    size_t length = wire_encode_hello(buffer, sizeof buffer, 1, name);
    uint16_t declared = (uint16_t)(buffer[16] | buffer[17] << 8);
    report("wire: names are cut at 256 bytes without splitting a character",
           declared == 255 && length == 16 + 2 + 255 && (buffer[18 + 254] & 0xC0) == 0x80, "declared %u", declared);
}

static void test_decode_replies(void)
{
    static const uint8_t failure[] = {0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00, 0x06, 0x80, 0xD4, 0xC3, 0xB2, 0xA1,
                                      0x06, 0x00, 0x00, 0x00, 0x02, 0x00, 0x02, 0x00, 'n', 'o'};
    struct wire_message message;
    bool ok = wire_decode(failure, sizeof failure, &message) == 0 && message.header.type == WIRE_FAILURE
              && message.header.request_id == 0xA1B2C3D4 && message.as.failure.code == WIRE_PERMISSION_DENIED
              && message.as.failure.text_length == 2 && memcmp(message.as.failure.text, "no", 2) == 0;
    report("wire: failure reply decodes (the broker's golden bytes)", ok, "decode failed");

    static const uint8_t window[] = {
        0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00, 0x0B, 0x80, 0x04, 0, 0, 0, 0x34, 0, 0, 0,
        0x07, 0, 0, 0, 0, 0, 0, 0,             /* attachment 7 */
        0x00, 0x00, 0x40, 0, 0, 0, 0, 0,       /* file offset 0x400000 */
        0x02, 0, 0, 0,                          /* two extents */
        0x00, 0x00, 0x40, 0, 0, 0, 0, 0, 0x00, 0x10, 0, 0, 0, 0, 0, 0,
        0x00, 0x30, 0x40, 0, 0, 0, 0, 0, 0x00, 0x20, 0, 0, 0, 0, 0, 0,
    };
    ok = wire_decode(window, sizeof window, &message) == 0 && message.header.type == WIRE_ATTACHED_WINDOW
         && message.as.attached_window.attachment == 7 && message.as.attached_window.file_offset == 0x400000
         && message.as.attached_window.count == 2;
    struct wire_extent second = ok ? wire_window_extent(message.as.attached_window.extents, 1) : (struct wire_extent){0, 0};
    report("wire: attachedWindow decodes with its extents", ok && second.start == 0x403000 && second.length == 0x2000,
           "decode failed or wrong extent");

    static const uint8_t back_range[] = {
        0x58, 0x50, 0x4D, 0x4D, 0x03, 0x00, 0x04, 0x40, 0, 0, 0, 0, 0x20, 0, 0, 0,
        0x11, 0, 0, 0, 0, 0, 0, 0, 0x03, 0, 0, 0, 0, 0, 0, 0,
        0x00, 0x10, 0, 0, 0, 0, 0, 0, 0x00, 0x20, 0, 0, 0, 0, 0, 0,
    };
    ok = wire_decode(back_range, sizeof back_range, &message) == 0 && message.header.type == WIRE_BACK_RANGE
         && message.as.back_range.segment == 0x11 && message.as.back_range.sequence == 3
         && message.as.back_range.start == 0x1000 && message.as.back_range.length == 0x2000;
    report("wire: backRange event decodes", ok, "decode failed");

    /* Malformed frames: each must be refused, never read past its end. */
    uint8_t broken[sizeof window];
    memcpy(broken, window, sizeof window);
    broken[0] = 0x59;
    bool refused = wire_decode(broken, sizeof broken, &message) < 0;
    memcpy(broken, window, sizeof window);
    broken[4] = 0x02;
    refused = refused && wire_decode(broken, sizeof broken, &message) < 0;
    refused = refused && wire_decode(window, sizeof window - 1, &message) < 0;
    memcpy(broken, window, sizeof window);
    broken[32] = 0xFF; /* 255 extents claimed, two present */
    refused = refused && wire_decode(broken, sizeof broken, &message) < 0;
    refused = refused && wire_decode(window, 10, &message) < 0;
    uint8_t trailing[sizeof back_range + 1];
    memcpy(trailing, back_range, sizeof back_range);
    trailing[sizeof back_range] = 0;
    trailing[12] = 0x21;
    refused = refused && wire_decode(trailing, sizeof trailing, &message) < 0;
    report("wire: bad magic, version, length, extent count and trailing bytes are refused", refused, "one was accepted");
}

static void test_error_mapping(void)
{
    bool ok = errno_for_broker_code(1) == ENOENT && errno_for_broker_code(2) == EACCES
              && errno_for_broker_code(3) == EINVAL && errno_for_broker_code(4) == EPROTO
              && errno_for_broker_code(5) == EPROTO && errno_for_broker_code(6) == ENOMEM
              && errno_for_broker_code(7) == ENOTCONN && errno_for_broker_code(8) == EIO
              && errno_for_broker_code(9) == ETIMEDOUT && errno_for_broker_code(10) == EBUSY
              && errno_for_broker_code(77) == EIO;
    report("errors: broker codes map to errno", ok, "a code maps wrongly");
}

static void test_maps_parser(void)
{
    const char text[] =
        "55d1c0a00000-55d1c0a21000 rw-p 00000000 00:00 0                          [heap]\n"
        "7f3e4c000000-7f3e4c021000 r-xp 0001a000 fd:01 1234567                    /usr/lib/x86_64-linux-gnu/libc.so.6\n"
        "7f3e50000000-7f3e50001000 rw-s 7f3e50000000 00:01 42                     /memfd:xpmem-address-space (deleted)\n"
        "7ffd1e9f0000-7ffd1ea11000 rw-p 00000000 00:00 0                          [stack]\n";
    const char *cursor = text, *end = text + sizeof text - 1;
    struct maps_entry entries[5];
    int count = 0;
    while (count < 5 && proc_maps_next(&cursor, end, &entries[count]))
        count++;
    bool ok = count == 4 && entries[0].start == 0x55d1c0a00000 && entries[0].end == 0x55d1c0a21000
              && entries[0].writable && !entries[0].shared && maps_entry_path_is(&entries[0], "[heap]")
              && entries[1].executable && entries[1].offset == 0x1a000 && entries[1].device_major == 0xfd
              && entries[1].inode == 1234567 && entries[2].shared && entries[2].offset == 0x7f3e50000000
              && entries[2].inode == 42 && maps_entry_path_starts_with(&entries[2], "/memfd:")
              && maps_entry_path_is(&entries[3], "[stack]");
    report("maps: /proc/self/maps lines parse", ok, "parsed %d entries", count);
}

static void test_import_cache(void)
{
    import_cache_lock();
    int fd = 1000; /* never mapped: only compared */
    int kept = import_cache_adopt_descriptor(77, true, fd);
    struct wire_extent extents[] = {{0x10000, 0x4000}, {0x14000, 0x2000}, {0x30000, 0x1000}};
    import_cache_note_backed(77, 0, extents, 3);
    uint64_t file_offset = 0;
    bool inside = import_cache_find_backed(77, true, 0x11000, 0x5000, &file_offset) == fd && file_offset == 0x11000;
    bool spans_gap = import_cache_find_backed(77, true, 0x15000, 0x1C000, &file_offset) < 0;
    bool other_access = import_cache_find_backed(77, false, 0x11000, 0x1000, &file_offset) < 0;
    import_cache_unlock();
    import_cache_forget_extents(77);
    import_cache_lock();
    bool forgotten = import_cache_find_backed(77, true, 0x11000, 0x1000, &file_offset) < 0;
    import_cache_unlock();
    report("import cache: adjacent extents merge, gaps and other access modes miss, invalidation forgets",
           kept == fd && inside && spans_gap && other_access && forgotten, "kept %d inside %d gap %d other %d forgotten %d",
           kept, inside, spans_gap, other_access, forgotten);
}

/* ---------------------------------------------------------------------------------------------
 * Stopping threads: a thread that is slow to leave the handler after a release, while the next
 * stop has begun, is not lost. */

struct slow_scene {
    _Atomic uint64_t progress; /* the slow thread's own work */
    _Atomic pid_t slow_tid;
    _Atomic bool quit;
    _Atomic bool hogging; /* the hog blocks the stop signal by now */
    int cpu; /* where the hog runs, and the slow thread while it is made slow */
};

static double seconds_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + now.tv_nsec / 1e9;
}

/* Starts a thread that blocks every signal from its first instruction (it inherits the mask). */
static int start_blocking_signals(pthread_t *thread, void *(*body)(void *), void *argument)
{
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int error = pthread_create(thread, NULL, body, argument);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    return error;
}

static void *count_forever(void *argument)
{
    struct slow_scene *scene = argument;
    scene->slow_tid = (pid_t)syscall(SYS_gettid);
    while (!scene->quit)
        scene->progress++;
    return NULL;
}

/* Keeps one CPU busy; started with every signal blocked, so stops leave it running. */
static void *hog(void *argument)
{
    struct slow_scene *scene = argument;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(scene->cpu, &one);
    sched_setaffinity(0, sizeof one, &one);
    scene->hogging = true;
    while (!scene->quit) {
    }
    return NULL;
}

/* Lets the slow thread be scheduled normally again after a while. Only shapes the scene (without it
 * the slow thread could take longer than a stop's deadline to leave the handler); the verdict is
 * whether the slow thread gets back to its work, whenever that is. Started with every signal
 * blocked, so that no stop parks it before it has done this. */
static void *restore_later(void *argument)
{
    struct slow_scene *scene = argument;
    struct timespec pause = {0, 200 * 1000000};
    while (nanosleep(&pause, &pause) < 0 && errno == EINTR) {
    }
    struct sched_param normal = {0};
    sched_setscheduler(scene->slow_tid, SCHED_OTHER, &normal);
    cpu_set_t every;
    sched_getaffinity(0, sizeof every, &every);
    sched_setaffinity(scene->slow_tid, sizeof every, &every);
    return NULL;
}

static bool wait_for_progress(struct slow_scene *scene, uint64_t from, double seconds)
{
    double deadline = seconds_now() + seconds;
    while (scene->progress == from) {
        if (seconds_now() > deadline)
            return false;
        sched_yield();
    }
    return true;
}

/* Two stops back to back, the second beginning while the slow thread, parked by the first, has
 * not been scheduled since its release; false when the slow thread does not run again after the
 * second release. */
static bool back_to_back_stops(struct private_area *area, struct slow_scene *scene, char *trace, size_t capacity)
{
    int first = thread_stop_all(area);
    unsigned first_parked = 0, first_left = 0;
    thread_stop_last_counts(&first_parked, &first_left);
    bool made_slow = false, restoring = false;
    pthread_t restorer;
    if (first == 0) {
        /* While it is parked: no CPU for it until the restorer gives it back. */
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(scene->cpu, &one);
        struct sched_param idle = {0};
        made_slow = sched_setaffinity(scene->slow_tid, sizeof one, &one) == 0
                    && sched_setscheduler(scene->slow_tid, SCHED_IDLE, &idle) == 0;
        restoring = start_blocking_signals(&restorer, restore_later, scene) == 0;
        thread_stop_release(area);
    }
    int second = first == 0 ? thread_stop_all(area) : -1;
    unsigned second_parked = 0, second_left = 0;
    thread_stop_last_counts(&second_parked, &second_left);
    uint64_t stopped_at = scene->progress;
    if (second == 0)
        thread_stop_release(area);
    bool runs_again = second == 0 && wait_for_progress(scene, stopped_at, 15);
    if (restoring)
        pthread_join(restorer, NULL);
    /* The counts are for the reader: each stop parks the slow thread, except that one caught between
     * leaving the handler's wait and returning from it (signals still blocked) is counted as left
     * running; it takes the pending signal as it returns and parks all the same. */
    snprintf(trace, capacity,
             "first stop %d parked %u left %u; made slow %d; second stop %d parked %u left %u; runs again after the "
             "release %d",
             first, first_parked, first_left, made_slow, second, second_parked, second_left, runs_again);
    return runs_again;
}

/* A thread parked by one stop and not scheduled again before the next stop begins (here: made
 * SCHED_IDLE on the CPU of a busy thread while parked; on a loaded machine, by the load) must be
 * parked by the next stop too, and get back to its own work after that stop's release. It used to
 * be taken for a thread that blocks the signal, the next stop went on without it, and it then waited
 * in the handler for a release that had gone by: for good. Whether the slow thread is still in the
 * handler when the second stop begins is up to the scheduler (a wake-up may run it at once), so the
 * scene is played a few times. */
static void test_slow_thread_survives_back_to_back_stops(void)
{
    const char *name = "thread stops: a thread slow to leave the handler when the next stop begins is parked by "
                       "that stop too, and runs its own code again after the release";
    struct private_area *area = private_area_get();
    if (area == NULL || thread_stop_prepare(area) < 0) {
        report(name, false, "no private area or stop signal: %s", strerror(errno));
        return;
    }
    static struct slow_scene scene;
    cpu_set_t allowed;
    sched_getaffinity(0, sizeof allowed, &allowed);
    scene.cpu = 0;
    while (scene.cpu < CPU_SETSIZE - 1 && !CPU_ISSET(scene.cpu, &allowed))
        scene.cpu++;
    pthread_t slow, busy;
    pthread_create(&slow, NULL, count_forever, &scene);
    start_blocking_signals(&busy, hog, &scene);
    bool counting = wait_for_progress(&scene, 0, 15);
    double deadline = seconds_now() + 15;
    while (!scene.hogging && seconds_now() < deadline)
        sched_yield();
    char trace[256] = "not started";
    int round = 0;
    bool ok = counting && scene.hogging;
    while (ok && round < 5) {
        round++;
        ok = back_to_back_stops(area, &scene, trace, sizeof trace);
    }
    scene.quit = true;
    pthread_join(busy, NULL);
    if (ok)
        pthread_join(slow, NULL);
    else
        pthread_detach(slow); /* possibly lost in the handler: the process's exit ends it */
    report(name, ok, "counting %d hogging %d; round %d: %s", counting, (int)scene.hogging, round, trace);
}

int main(void)
{
    test_get_matches_broker_golden();
    test_range_backed_matches_broker_golden();
    test_make_address_space_layout();
    test_claim_address_space_layout();
    test_report_attach_cache_layout();
    test_small_requests();
    test_string_cut_on_character_boundary();
    test_decode_replies();
    test_error_mapping();
    test_maps_parser();
    test_import_cache();
    test_slow_thread_survives_back_to_back_stops();
    return report_totals();
}
