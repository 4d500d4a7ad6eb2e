/* The windows xpmem_attach mapped in this process, so that xpmem_detach(any address inside) and
 * xpmem_release(apid) find them. */
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
    /* The broker's attachment id; 0 for windows mapped from the import cache without asking it. */
    uint64_t broker_attachment;
    /* The window's first byte: its offset in the segment, and in the segment's file. */
    uint64_t segment_offset;
    uint64_t file_offset;
};

int attachments_add(struct attachment attachment);
/* Removes and returns the attachment whose window contains `address`. */
bool attachments_take_containing(uintptr_t address, struct attachment *attachment);
/* Copies the attachment whose window contains `address`, leaving it recorded. */
bool attachments_find_containing(uintptr_t address, struct attachment *attachment);
/* Removes and returns one attachment made through `apid`; call until false. */
bool attachments_take_by_apid(uint64_t apid, struct attachment *attachment);
/* A window mapped at a fixed address replaces whatever attachment was there: forget those. */
void attachments_forget_overlapping(uintptr_t address, size_t length);
/* Calls `visit` for each attachment, lock held (it must not call back into this table). */
void attachments_for_each(void (*visit)(const struct attachment *attachment, void *context), void *context);
/* Broker ids die with the connection: afterwards detach only unmaps. */
void attachments_forget_broker_ids(void);
void attachments_forget_all(void);

/* In a fork child: the lock as if never taken, then everything forgotten. */
void attachments_reset_after_fork(void);

#endif
