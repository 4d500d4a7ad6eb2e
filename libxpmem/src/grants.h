/* The access permits this process holds (xpmem_get's apids = the broker's handles), with the
 * segment and access each was granted for. */
#ifndef XPMEM_GRANTS_H
#define XPMEM_GRANTS_H

#include <stdbool.h>
#include <stdint.h>

struct grant {
    uint64_t handle;
    uint64_t segment;
    bool read_write;
};

int grants_add(struct grant grant);
bool grants_find(uint64_t handle, struct grant *grant);
bool grants_remove(uint64_t handle);
void grants_forget_all(void);

/* In a fork child: the lock as if never taken, then everything forgotten. */
void grants_reset_after_fork(void);

#endif
