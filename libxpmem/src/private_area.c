#include "private_area.h"

#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>
#include <ucontext.h>

#include "pages.h"
#include "raw_memory.h"
#include "thread_stop.h"

static struct private_area area;
static pthread_once_t area_once = PTHREAD_ONCE_INIT;
static int area_error;

static size_t round_up(size_t value) { return (value + page_size() - 1) & ~(size_t)(page_size() - 1); }

static void make_area(void)
{
    size_t guard = page_size();
    size_t stop = round_up(sizeof(struct thread_stop_control));
    size_t watch = round_up(sizeof(struct watch_queue));
    size_t extents = round_up(sizeof(struct wire_extent) * MAX_WORKING_EXTENTS);
    size_t pagemap = round_up(sizeof(uint64_t) * PAGEMAP_CHUNK_PAGES);
    size_t frames = round_up(WIRE_MAX_REPLY) + round_up(WIRE_MAX_REQUEST);
    size_t buffers = round_up(DIRECTORY_BUFFER_SIZE) + round_up(4096);
    size_t size = guard + PRIVATE_STACK_SIZE + guard + WATCH_STACK_SIZE + stop + watch + extents + pagemap + frames + buffers;
    uint8_t *base = raw_mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        area_error = errno;
        return;
    }
    /* A stack overflow of the event thread faults instead of running into whatever lies below. */
    mprotect(base, guard, PROT_NONE);
    uint8_t *cursor = base + guard;
    area.stack = cursor;
    area.stack_size = PRIVATE_STACK_SIZE;
    cursor += PRIVATE_STACK_SIZE;
    mprotect(cursor, guard, PROT_NONE);
    cursor += guard;
    area.watch_stack = cursor;
    area.watch_stack_size = WATCH_STACK_SIZE;
    cursor += WATCH_STACK_SIZE;
    area.stop = (struct thread_stop_control *)cursor;
    cursor += stop;
    area.watch = (struct watch_queue *)cursor;
    cursor += watch;
    area.extents = (struct wire_extent *)cursor;
    cursor += extents;
    area.pagemap = (uint64_t *)cursor;
    cursor += pagemap;
    area.event_frame = cursor;
    cursor += round_up(WIRE_MAX_REPLY);
    area.reply_frame = cursor;
    cursor += round_up(WIRE_MAX_REQUEST);
    area.directory_buffer = (char *)cursor;
    cursor += round_up(DIRECTORY_BUFFER_SIZE);
    area.status_buffer = (char *)cursor;
    area.base = base;
    area.size = size;
    if (private_area_grow_maps(&area, 256 * 1024) < 0) {
        area_error = errno;
        raw_munmap(base, size);
        area.base = NULL;
    }
}

struct private_area *private_area_get(void)
{
    pthread_once(&area_once, make_area);
    if (area.base == NULL) {
        errno = area_error;
        return NULL;
    }
    return &area;
}

int private_area_grow_maps(struct private_area *target, size_t capacity)
{
    capacity = round_up(capacity);
    char *text = raw_mmap(NULL, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (text == MAP_FAILED)
        return -1;
    if (target->maps_text != NULL)
        raw_munmap(target->maps_text, target->maps_capacity);
    target->maps_text = text;
    target->maps_capacity = capacity;
    return 0;
}

void private_area_run_on_stack(void *stack, size_t size, void (*function)(void))
{
    ucontext_t caller, worker;
    getcontext(&worker);
    worker.uc_stack.ss_sp = stack;
    worker.uc_stack.ss_size = size;
    worker.uc_link = &caller;
    makecontext(&worker, function, 0);
    swapcontext(&caller, &worker);
}
