#include "attach_cache_report.h"

#include <errno.h>
#include <stdatomic.h>
#include <time.h>

#include "debug_log.h"
#include "session.h"
#include "wire.h"

#define REPORT_INTERVAL_NS 1000000000LL

static _Atomic long long last_report_ns;
static _Atomic bool refused;
static _Atomic unsigned hits_since_check;

static long long monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000000000LL + now.tv_nsec;
}

bool attach_cache_report_hit_due(void) { return (++hits_since_check & 255) == 0; }

void attach_cache_report(const struct xpmem_attach_cache_stats *stats, bool now)
{
    if (refused)
        return;
    long long at = monotonic_ns(), last = last_report_ns;
    if (!now && last != 0 && at - last < REPORT_INTERVAL_NS)
        return;
    /* One thread reports for the interval; the others go on. */
    if (!atomic_compare_exchange_strong(&last_report_ns, &last, at) && !now)
        return;
    struct channel *channel = session_channel();
    if (channel == NULL)
        return;
    struct wire_attach_cache_counters counters = {
        .hits = stats->hits, .misses = stats->misses, .capacity_evictions = stats->capacity_evictions,
        .pressure_evictions = stats->pressure_evictions, .entries = stats->entries, .bytes = stats->bytes};
    uint8_t request[128], reply_buffer[CHANNEL_SMALL_REPLY];
    size_t length = wire_encode_report_attach_cache(request, sizeof request, 0, &counters);
    struct wire_message reply;
    int saved = errno;
    if (channel_call(channel, request, length, NULL, 0, WIRE_DONE, reply_buffer, sizeof reply_buffer, &reply, NULL) < 0
        && !channel->broken) {
        /* Refused by a broker that is still there: one that does not know the message. */
        debug_log("the broker refused the attachment cache's counters (%m); not sending them again");
        refused = true;
    }
    errno = saved;
}

void attach_cache_report_reset_after_fork(void)
{
    last_report_ns = 0;
    refused = false;
    hits_since_check = 0;
}
