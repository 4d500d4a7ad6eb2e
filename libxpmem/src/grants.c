#include "grants.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

static pthread_mutex_t grants_lock = PTHREAD_MUTEX_INITIALIZER;
static struct grant *grants;
static size_t grant_count, grant_capacity;
/* apids stay below 2^63, positive as the signed xpmem_apid_t callers hold them in. */
static uint64_t next_apid = 1;

int64_t grants_add(struct grant grant)
{
    pthread_mutex_lock(&grants_lock);
    if (grant_count == grant_capacity) {
        size_t capacity = grant_capacity == 0 ? 16 : grant_capacity * 2;
        struct grant *grown = realloc(grants, capacity * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&grants_lock);
            errno = ENOMEM;
            return -1;
        }
        grants = grown;
        grant_capacity = capacity;
    }
    grant.apid = next_apid++;
    grants[grant_count++] = grant;
    pthread_mutex_unlock(&grants_lock);
    return (int64_t)grant.apid;
}

static struct grant *locked_find(uint64_t apid)
{
    for (size_t index = 0; index < grant_count; index++)
        if (grants[index].apid == apid)
            return &grants[index];
    return NULL;
}

bool grants_find(uint64_t apid, struct grant *grant)
{
    pthread_mutex_lock(&grants_lock);
    struct grant *found = locked_find(apid);
    if (found != NULL)
        *grant = *found;
    pthread_mutex_unlock(&grants_lock);
    return found != NULL;
}

bool grants_remove(uint64_t apid, struct grant *removed)
{
    pthread_mutex_lock(&grants_lock);
    struct grant *found = locked_find(apid);
    if (found != NULL) {
        *removed = *found;
        *found = grants[--grant_count];
    }
    pthread_mutex_unlock(&grants_lock);
    return found != NULL;
}

bool grants_any(void)
{
    pthread_mutex_lock(&grants_lock);
    bool any = grant_count > 0;
    pthread_mutex_unlock(&grants_lock);
    return any;
}

void grants_set_handle(uint64_t apid, uint64_t handle, uint64_t generation)
{
    pthread_mutex_lock(&grants_lock);
    struct grant *found = locked_find(apid);
    if (found != NULL) {
        found->handle = handle;
        found->generation = generation;
    }
    pthread_mutex_unlock(&grants_lock);
}

void grants_forget_handle(uint64_t apid, uint64_t handle)
{
    pthread_mutex_lock(&grants_lock);
    struct grant *found = locked_find(apid);
    if (found != NULL && found->handle == handle)
        found->handle = 0;
    pthread_mutex_unlock(&grants_lock);
}

void grants_forget_handles(void)
{
    pthread_mutex_lock(&grants_lock);
    for (size_t index = 0; index < grant_count; index++)
        grants[index].handle = 0;
    pthread_mutex_unlock(&grants_lock);
}

void grants_reset_after_fork(void)
{
    /* Another thread of the parent may have held the lock at fork: it does not exist here. */
    pthread_mutex_init(&grants_lock, NULL);
    grant_count = 0;
}
