#include "import_faults.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "attachments.h"
#include "channel.h"
#include "debug_log.h"
#include "grant_handles.h"
#include "grants.h"
#include "pages.h"
#include "private_area.h"
#include "raw_memory.h"
#include "session.h"
#include "thread_stop.h"
#include "uffd.h"
#include "wire.h"

/* How much of a window one fault asks the exporter to back: enough that touching a buffer page by
 * page costs one round trip per 2 MiB, little enough that a fault does not copy a whole window; the
 * broker refuses more (BrokerCore.maximumFaultLength), as filling allocates the exporter's memory. */
#define FAULT_CHUNK (UINT64_C(2) << 20)

static pthread_mutex_t faults_lock = PTHREAD_MUTEX_INITIALIZER;
static int faults_descriptor = -1;
static bool faults_refused;

static void wake(uint64_t start, uint64_t length) { uffd_wake(faults_descriptor, start, length); }

/* Pages of read-only windows answered with a zero page while no broker answered. A read-only
 * window maps the file privately (window_map.c), so its zero page is its own, not a page of the
 * file, and would read zero for good; once a broker is back they are dropped, and the next touch
 * asks it. Beyond this many, a page keeps reading zero until attached again. */
#define ZERO_FILLED_LIMIT 1024
static uint64_t zero_filled[ZERO_FILLED_LIMIT];
static unsigned zero_filled_count;

static void remember_zero_filled(const struct attachment *attachment, uint64_t page)
{
    struct grant grant;
    if (!grants_find(attachment->apid, &grant) || grant.read_write)
        return; /* a shared window's zero page is the file's: it follows already */
    pthread_mutex_lock(&faults_lock);
    if (zero_filled_count < ZERO_FILLED_LIMIT)
        zero_filled[zero_filled_count++] = page;
    else
        debug_log("too many pages read as zeros while no broker answered: %p keeps reading zeros",
                  (void *)(uintptr_t)page);
    pthread_mutex_unlock(&faults_lock);
}

void import_faults_broker_back(void)
{
    pthread_mutex_lock(&faults_lock);
    for (unsigned index = 0; index < zero_filled_count; index++) {
        struct attachment attachment;
        struct grant grant;
        /* Only if a read-only window is still there: anything else at that address is not ours to drop. */
        if (attachments_find_containing((uintptr_t)zero_filled[index], &attachment)
            && grants_find(attachment.apid, &grant) && !grant.read_write)
            raw_madvise((void *)(uintptr_t)zero_filled[index], page_size(), MADV_DONTNEED);
    }
    zero_filled_count = 0;
    pthread_mutex_unlock(&faults_lock);
}

enum resolution { PAGE_BACKED, NOTHING_MAPPED, NO_ANSWER };

struct fault_request {
    uint64_t offset, length;
};

static size_t encode_resolve_fault(void *buffer, size_t capacity, uint64_t handle, const void *context)
{
    const struct fault_request *chunk = context;
    return wire_encode_resolve_fault(buffer, capacity, 0, handle, chunk->offset, chunk->length);
}

/* Asks the broker to have [chunk_start, chunk_end) of the attachment backed: whether the page at
 * `page` has a page in the file now, or the exporter has nothing there, or no answer came. */
static enum resolution back_again(const struct attachment *attachment, uint64_t page, uint64_t chunk_start, uint64_t chunk_end)
{
    struct grant grant;
    uint8_t reply_buffer[8192];
    struct fault_request chunk = {.offset = attachment->segment_offset + (chunk_start - attachment->address),
                                  .length = chunk_end - chunk_start};
    struct wire_message reply;
    if (grant_handles_call(attachment->apid, &grant, encode_resolve_fault, &chunk, WIRE_FAULT_RESOLVED, reply_buffer,
                           sizeof reply_buffer, &reply, NULL) < 0) {
        debug_log("the broker could not back the faulting page at %p again: %s", (void *)(uintptr_t)page, strerror(errno));
        /* Released meanwhile (the window goes with it), or the segment is gone for good; else no answer. */
        return errno == EINVAL || errno == ENOENT ? NOTHING_MAPPED : NO_ANSWER;
    }
    uint64_t file_offset = attachment->file_offset + (page - attachment->address);
    for (uint32_t index = 0; index < reply.as.fault_resolved.count; index++) {
        struct wire_extent extent = wire_window_extent(reply.as.fault_resolved.extents, index);
        if (file_offset >= extent.start && file_offset - extent.start < extent.length)
            return PAGE_BACKED;
    }
    return NOTHING_MAPPED;
}

static void resolve(uint64_t address, pid_t thread)
{
    uint64_t page = page_round_down(address);
    /* Another thread's fault may have brought the page in already. */
    unsigned char resident = 0;
    if (mincore((void *)(uintptr_t)page, page_size(), &resident) == 0 && (resident & 1) != 0) {
        wake(page, page_size());
        return;
    }
    struct attachment attachment;
    if (!attachments_find_containing((uintptr_t)page, &attachment)) {
        wake(page, page_size()); /* detached meanwhile: the retry meets whatever is mapped now */
        return;
    }
    uint64_t window_end = attachment.address + attachment.length;
    uint64_t chunk_start = page & ~(FAULT_CHUNK - 1);
    if (chunk_start < attachment.address)
        chunk_start = attachment.address;
    uint64_t chunk_end = chunk_start + FAULT_CHUNK < window_end ? chunk_start + FAULT_CHUNK : window_end;
    /* Without an answer (the broker is restarting, or its exporter not registered again yet) the
     * access waits for one a while: the page is the exporter's, not a page of zeros to make up. A
     * broker gone for longer than that is not waited for again. */
    enum resolution resolution;
    struct timespec started, now;
    clock_gettime(CLOCK_MONOTONIC, &started);
    for (;;) {
        resolution = back_again(&attachment, page, chunk_start, chunk_end);
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long waited = (now.tv_sec - started.tv_sec) * 1000000000LL + (now.tv_nsec - started.tv_nsec);
        if (resolution != NO_ANSWER || waited > GRANT_HANDLES_RECLAIM_WAIT_NS
            || !session_settling_within(GRANT_HANDLES_RECLAIM_WAIT_NS))
            break;
        struct timespec pause = {0, 50 * 1000000};
        nanosleep(&pause, NULL);
    }
    switch (resolution) {
    case PAGE_BACKED:
        wake(chunk_start, chunk_end - chunk_start);
        return;
    case NO_ANSWER: {
        /* Still no broker: the page reads as zeros, a page of the file like any the importer
         * touches first, rather than killing the importer. */
        struct uffdio_zeropage zero = {.range = {.start = page, .len = page_size()}};
        if (ioctl(faults_descriptor, UFFDIO_ZEROPAGE, &zero) < 0)
            wake(page, page_size());
        else
            remember_zero_filled(&attachment, page);
        return;
    }
    case NOTHING_MAPPED:
        break;
    }
    /* The exporter has no memory there any more: as with XPMEM, the access raises SIGBUS (the
     * signal ends the thread's wait; if a handler returns, the access faults here again). */
    syscall(SYS_tgkill, getpid(), thread, SIGBUS);
}

static void *serve_faults(void *unused)
{
    (void)unused;
    for (;;) {
        struct pollfd watched = {.fd = faults_descriptor, .events = POLLIN};
        if (poll(&watched, 1, -1) < 0 && errno != EINTR)
            return NULL;
        struct uffd_msg messages[16];
        ssize_t got = read(faults_descriptor, messages, sizeof messages);
        if (got < 0)
            continue; /* EAGAIN: another wake-up took them */
        for (size_t index = 0; index < (size_t)got / sizeof messages[0]; index++)
            if (messages[index].event == UFFD_EVENT_PAGEFAULT)
                resolve(messages[index].arg.pagefault.address, (pid_t)messages[index].arg.pagefault.feat.ptid);
    }
}

/* Opens the descriptor and starts the thread once; false when the kernel refuses. */
static bool ready(void)
{
    if (faults_descriptor >= 0)
        return true;
    if (faults_refused)
        return false;
    int descriptor = uffd_open(UFFD_FEATURE_THREAD_ID);
    if (descriptor < 0) {
        faults_refused = true;
        debug_log("cannot follow attachments with userfaultfd (%s): after the exporter unmaps memory an attachment "
                  "reads zeros there until attached again",
                  strerror(errno));
        return false;
    }
    faults_descriptor = descriptor;
    int error = thread_stop_start_stoppable("xpmem-faults", serve_faults, NULL);
    if (error != 0) {
        close(descriptor);
        faults_descriptor = -1;
        faults_refused = true;
        debug_log("cannot start the fault thread: %s", strerror(error));
        return false;
    }
    return true;
}

int import_faults_watch(uint64_t address, uint64_t length)
{
    pthread_mutex_lock(&faults_lock);
    int result = ready() ? uffd_register(faults_descriptor, address, length, UFFDIO_REGISTER_MODE_MISSING) : -1;
    pthread_mutex_unlock(&faults_lock);
    return result;
}

void import_faults_forget(void)
{
    pthread_mutex_init(&faults_lock, NULL);
    if (faults_descriptor >= 0)
        close(faults_descriptor);
    faults_descriptor = -1;
    faults_refused = false;
    zero_filled_count = 0;
}
