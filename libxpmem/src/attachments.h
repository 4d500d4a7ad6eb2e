/* The windows xpmem_attach mapped in this process, so that xpmem_detach(any address inside) and
 * xpmem_release(apid) find them, and so that the attachment cache (attach_cache.h) finds a window
 * already mapped. A window is held by the application while its reference count is above 0; a
 * cacheable one stays mapped and recorded at 0 ("idle") until the cache evicts it. */
#ifndef XPMEM_ATTACHMENTS_H
#define XPMEM_ATTACHMENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct attachment {
    uintptr_t address;
    size_t length;
    /* The permit it was attached through (xpmem_release takes its attachments along). */
    uint64_t apid;
    /* The segment behind that permit: its invalidations and release make cached windows stale. */
    uint64_t segment;
    /* The broker's attachment id; 0 for windows mapped from the import cache without asking it. */
    uint64_t broker_attachment;
    /* The window's first byte: its offset in the segment, and in the segment's file. */
    uint64_t segment_offset;
    uint64_t file_offset;
    /* xpmem_attach calls not yet matched by xpmem_detach. */
    unsigned references;
    /* Whether it may stay mapped at 0 references for a later attach of the same window (mapped
     * anywhere, no holes: exactly what a fresh attach would map now). */
    bool cacheable;
    /* Something changed under it (invalidation, release, a move, a new broker): no more hits, and
     * unmapped as soon as nobody holds it. */
    bool stale;
    /* The attachments' clock when it was last attached or detached: the least is the coldest. */
    uint64_t last_used;
};

/* Records a new attachment (the clock sets last_used). Attachments it overlaps are forgotten: a window
 * mapped at a fixed address replaced whatever was there. -1 with errno ENOMEM when no room. */
int attachments_add(struct attachment attachment);
/* A cacheable, fresh window of `apid` at exactly `segment_offset` and `length`: takes a reference,
 * refreshes it and sets *address. */
bool attachments_hold_cached(uint64_t apid, uint64_t segment_offset, size_t length, uintptr_t *address);

enum attachment_release {
    ATTACHMENT_NOT_HELD,   /* no window there with references */
    ATTACHMENT_STILL_HELD, /* references remain */
    ATTACHMENT_IDLE,       /* none remain; kept mapped for the cache */
    ATTACHMENT_TAKEN,      /* none remain; removed and copied to *taken, for the caller to unmap */
};
/* Drops one reference of the held attachment whose window contains `address`. At 0 it stays
 * recorded when `keep_idle` and it is cacheable and not stale, else it is taken. */
enum attachment_release attachments_release_containing(uintptr_t address, bool keep_idle, struct attachment *taken);
/* Removes and returns the idle attachment used longest ago. */
bool attachments_take_coldest_idle(struct attachment *attachment);
/* Removes and returns one idle attachment that went stale; call until false. */
bool attachments_take_stale_idle(struct attachment *attachment);

/* Windows of `segment` overlapping [segment_offset, + length) go stale, seen by the next call that
 * takes the table's lock. For the event thread only: it never waits for that lock. */
void attachments_mark_stale(uint64_t segment, uint64_t segment_offset, uint64_t length);
/* Every window goes stale (a new broker connection). Takes the lock. */
void attachments_mark_all_stale(void);

struct attachment_totals {
    size_t cached_entries, cached_bytes; /* cacheable windows, held or idle */
    size_t idle_entries, idle_bytes;     /* of those, the ones nobody holds */
};
struct attachment_totals attachments_totals(void);

/* Copies the attachment whose window contains `address`, leaving it recorded. */
bool attachments_find_containing(uintptr_t address, struct attachment *attachment);
/* Removes and returns one attachment made through `apid`, held or idle; call until false. */
bool attachments_take_by_apid(uint64_t apid, struct attachment *attachment);
/* Calls `visit` for each attachment, lock held (it must not call back into this table). */
void attachments_for_each(void (*visit)(const struct attachment *attachment, void *context), void *context);
/* Broker ids die with the connection: afterwards detach only unmaps. */
void attachments_forget_broker_ids(void);
void attachments_forget_all(void);

/* In a fork child: the lock as if never taken, then everything forgotten. */
void attachments_reset_after_fork(void);

#endif
