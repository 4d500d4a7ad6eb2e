/* The access permits this process holds. An apid (what xpmem_get returned) is this library's own
 * number, stable for the permit's life; the broker's handle behind it is asked for again when the
 * broker forgot it (it restarted). */
#ifndef XPMEM_GRANTS_H
#define XPMEM_GRANTS_H

#include <stdbool.h>
#include <stdint.h>

struct grant {
    uint64_t apid;
    /* The broker's handle; 0 while it must be obtained again with `get`. */
    uint64_t handle;
    /* The connection (channel generation) that issued it: sent on another, it could name another permit. */
    uint64_t generation;
    uint64_t segment;
    bool read_write;
};

/* Records `grant` under a fresh apid, which it returns (-1 with errno on failure). */
int64_t grants_add(struct grant grant);
bool grants_find(uint64_t apid, struct grant *grant);
bool grants_remove(uint64_t apid, struct grant *removed);
bool grants_any(void);
/* The connection of `generation` gave the permit `apid` the handle `handle` (again). */
void grants_set_handle(uint64_t apid, uint64_t handle, uint64_t generation);
/* The handle `handle` of permit `apid` turned out stale (its connection was replaced): forget it, if
 * it is still the one recorded. */
void grants_forget_handle(uint64_t apid, uint64_t handle);
/* The broker forgot every handle: a new connection. */
void grants_forget_handles(void);

/* In a fork child: the lock as if never taken, then everything forgotten. */
void grants_reset_after_fork(void);

#endif
