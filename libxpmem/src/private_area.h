/* Memory of the library's own that backing never moves into the address-space file: the event
 * thread's and the watch thread's stacks (with its TLS and thread descriptor) and the scratch buffers it uses while the
 * other threads are stopped. Backing copies a range and then maps the copy over it, so anything
 * written in between would be lost; the event thread writes only here during that time. */
#ifndef XPMEM_PRIVATE_AREA_H
#define XPMEM_PRIVATE_AREA_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#define PRIVATE_STACK_SIZE (1u << 20)
#define WATCH_STACK_SIZE (256u << 10)
#define MAX_STOPPED_THREADS 16384
#define MAX_WORKING_EXTENTS 4096
/* Backing copies and remaps this many pages at a time: the process needs only one chunk of extra
 * memory at once, and the pages freed by one chunk's remap are reused, cache-warm, by the next. */
#define PAGEMAP_CHUNK_PAGES 1024
#define DIRECTORY_BUFFER_SIZE 32768

struct thread_stop_control;

/* What the exporter did to backed memory, read from the watch (exporter_watch.h) while other threads
 * stop and acted on once they have. Kept here: it is written while they are stopped. */
#define MAX_WATCH_EVENTS 4096
enum watch_kind { WATCH_UNMAPPED = 1, WATCH_MOVED = 2 };
struct watch_event {
    uint32_t kind;
    uint64_t from;   /* the unmapped range's start, or where the moved range was */
    uint64_t to;     /* where it is now (WATCH_MOVED) */
    uint64_t length; /* bytes unmapped, or the moved range's length before the move */
};
struct watch_queue {
    uint32_t count;
    struct watch_event events[MAX_WATCH_EVENTS];
};

struct private_area {
    uint8_t *base;
    size_t size;
    void *stack; /* lowest usable byte; a guard page lies below */
    size_t stack_size;
    void *watch_stack; /* the watch thread's (exporter_watch.h), also above a guard page */
    size_t watch_stack_size;
    struct thread_stop_control *stop;
    struct watch_queue *watch;
    struct wire_extent *extents;   /* MAX_WORKING_EXTENTS */
    uint64_t *pagemap;             /* PAGEMAP_CHUNK_PAGES entries */
    uint8_t *event_frame;          /* WIRE_MAX_REPLY bytes: the event being served */
    uint8_t *reply_frame;          /* WIRE_MAX_REQUEST bytes: the answer to it */
    char *directory_buffer;        /* DIRECTORY_BUFFER_SIZE bytes for getdents64 */
    char *status_buffer;           /* 4096 bytes for /proc/self/task/TID/status */
    /* /proc/self/maps text; grows by replacing the mapping, so it is kept apart from `base`. */
    char *maps_text;
    size_t maps_capacity;
};

/* The process's area, made on first use; NULL with errno if it cannot be mapped. */
struct private_area *private_area_get(void);
/* Replaces the maps buffer with one of at least `capacity` bytes; may be called while other
 * threads are stopped (only mmap/munmap). */
int private_area_grow_maps(struct private_area *area, size_t capacity);
/* Runs `function` on `stack` (one of the area's, unused meanwhile) and returns: for work that remaps
 * memory the calling thread's own stack may lie in. */
void private_area_run_on_stack(void *stack, size_t size, void (*function)(void));

#endif
