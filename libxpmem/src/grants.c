#include "grants.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

static pthread_mutex_t grants_lock = PTHREAD_MUTEX_INITIALIZER;
static struct grant *grants;
static size_t grant_count, grant_capacity;

int grants_add(struct grant grant)
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
    grants[grant_count++] = grant;
    pthread_mutex_unlock(&grants_lock);
    return 0;
}

bool grants_find(uint64_t handle, struct grant *grant)
{
    bool found = false;
    pthread_mutex_lock(&grants_lock);
    for (size_t index = 0; index < grant_count; index++) {
        if (grants[index].handle == handle) {
            *grant = grants[index];
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&grants_lock);
    return found;
}

bool grants_remove(uint64_t handle)
{
    bool found = false;
    pthread_mutex_lock(&grants_lock);
    for (size_t index = 0; index < grant_count; index++) {
        if (grants[index].handle == handle) {
            grants[index] = grants[--grant_count];
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&grants_lock);
    return found;
}

void grants_forget_all(void)
{
    pthread_mutex_lock(&grants_lock);
    grant_count = 0;
    pthread_mutex_unlock(&grants_lock);
}

void grants_reset_after_fork(void)
{
    /* Another thread of the parent may have held the lock at fork: it does not exist here. */
    pthread_mutex_init(&grants_lock, NULL);
    grants_forget_all();
}
