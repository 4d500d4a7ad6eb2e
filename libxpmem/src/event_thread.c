#include "event_thread.h"

#include <errno.h>
#include <stdbool.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "attachments.h"
#include "backing.h"
#include "channel.h"
#include "debug_log.h"
#include "exports.h"
#include "hook_notices.h"
#include "session.h"
#include "thread_stop.h"
#include "import_cache.h"
#include "private_area.h"
#include "segment_moves.h"
#include "wire.h"

static double elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - since->tv_sec) * 1e3 + (double)(now.tv_nsec - since->tv_nsec) / 1e6;
}

static void serve_back_range(int socket, struct private_area *area, const struct wire_message *event, bool fill)
{
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    struct backing_result result;
    /* A request queued before its window was removed must not back anything: after the last window
     * went, the file may be a fresh one that a wider window hands to others. Checked under the
     * backing lock, which the file's replacement takes too. */
    if (!exports_contains(event->as.back_range.segment)) {
        memset(&result, 0, sizeof result);
        result.code = WIRE_NOT_FOUND;
        snprintf(result.text, sizeof result.text, "segment %llu is not exported any more",
                 (unsigned long long)event->as.back_range.segment);
    } else {
        backing_back_range(event->as.back_range.start, event->as.back_range.length, fill, &result);
    }
    if (result.code == 0)
        debug_log("backed [0x%llx, +0x%llx): %u extent(s), %llu bytes copied, %llu remapped, %.3f ms "
                  "(survey %.3f, stopping threads %.3f: %u parked, %u left running; copy and remap %.3f)",
                  (unsigned long long)event->as.back_range.start, (unsigned long long)event->as.back_range.length,
                  result.count, (unsigned long long)result.copied_bytes, (unsigned long long)result.remapped_bytes,
                  elapsed_ms(&started), result.survey_ns / 1e6, result.stop_ns / 1e6, result.threads_parked,
                  result.threads_left_running, result.stopped_ns / 1e6);
    else
        debug_log("backing [0x%llx, +0x%llx) failed: %s", (unsigned long long)event->as.back_range.start,
                  (unsigned long long)event->as.back_range.length, result.text);
    size_t length = wire_encode_range_backed(area->reply_frame, WIRE_MAX_REQUEST, event->as.back_range.segment,
                                             event->as.back_range.sequence, result.code,
                                             result.code == 0 ? "" : result.text, result.extents, result.count);
    if (length > 0)
        seqpacket_send(socket, area->reply_frame, length, NULL, 0);
}

/* Serves one event; `file` is the descriptor it carried (-1 if none), which it takes. */
static void serve(int socket, struct private_area *area, const struct wire_message *event, int file)
{
    if (event->header.type == WIRE_SEGMENT_FILE_REPLACED && file >= 0) {
        segment_moves_follow(event->as.segment_file_replaced.segment,
                             event->as.segment_file_replaced.access == WIRE_READ_WRITE, file);
        return;
    }
    if (file >= 0)
        close(file);
    switch (event->header.type) {
    case WIRE_BACK_RANGE:
    case WIRE_FILL_RANGE:
        serve_back_range(socket, area, event, event->header.type == WIRE_FILL_RANGE);
        break;
    case WIRE_INVALIDATE_BEGIN: {
        /* What this process knew to be backed in that segment may no longer be: ask the broker
         * again on the next attach. */
        import_cache_forget_extents(event->as.invalidate_begin.segment);
        /* Cached windows over it may no longer be what a fresh attach maps (a read-only one does
         * not follow the exporter): no more hits, unmapped once idle. */
        attachments_mark_stale(event->as.invalidate_begin.segment, event->as.invalidate_begin.offset,
                               event->as.invalidate_begin.length);
        size_t length = wire_encode_acknowledge(area->reply_frame, WIRE_MAX_REQUEST, event->as.invalidate_begin.segment,
                                                event->as.invalidate_begin.sequence);
        seqpacket_send(socket, area->reply_frame, length, NULL, 0);
        break;
    }
    case WIRE_RELEASED:
        /* The permits on it stay as they are: the broker keeps them until they are released. */
        import_cache_forget_segment(event->as.released.segment);
        attachments_mark_stale(event->as.released.segment, 0, UINT64_MAX);
        break;
    default:
        break; /* invalidateEnd, and events of later protocol revisions */
    }
}

static void *serve_events(void *argument)
{
    int socket = (int)(intptr_t)argument;
    struct private_area *area = private_area_get();
    thread_stop_exempt_self(THREAD_STOP_EVENT_THREAD);
    for (;;) {
        int descriptors[4];
        int descriptor_count = 0;
        ssize_t length = seqpacket_receive(socket, area->event_frame, WIRE_MAX_REPLY, descriptors, 4, &descriptor_count);
        /* One descriptor is an event's (segmentFileReplaced); more are not, and close here. */
        int file = descriptor_count == 1 ? descriptors[0] : -1;
        for (int index = file >= 0 ? 1 : 0; index < descriptor_count; index++)
            close(descriptors[index]);
        if (length == 0 || (length < 0 && errno != EMSGSIZE)) {
            if (file >= 0)
                close(file);
            session_broker_lost();
            break;
        }
        struct wire_message event;
        if (length < 0 || wire_decode(area->event_frame, (size_t)length, &event) < 0) {
            debug_log("ignoring a malformed event from the broker");
            if (file >= 0)
                close(file);
            continue;
        }
        backing_lock();
        serve(socket, area, &event, file);
        backing_unlock();
        hook_notices_send();
    }
    return NULL; /* the session closes the socket after joining */
}

int event_thread_start(int socket, pthread_t *thread)
{
    struct private_area *area = private_area_get();
    if (area == NULL)
        return -1;
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstack(&attributes, area->stack, area->stack_size);
    /* Every signal blocked: the application's signals go to its own threads, and the stop signal
     * never lands on the thread doing the stopping. */
    int error = thread_stop_start_exempt(THREAD_STOP_EVENT_THREAD, thread, &attributes, serve_events,
                                         (void *)(intptr_t)socket);
    pthread_attr_destroy(&attributes);
    if (error != 0) {
        errno = error;
        return -1;
    }
    pthread_setname_np(*thread, "xpmem-events");
    return 0;
}
