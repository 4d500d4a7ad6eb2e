#include "exports.h"

#include <string.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/random.h>

static pthread_mutex_t exports_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_rwlock_t changes_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct export *exports;
static size_t export_count, export_capacity;

int exports_draw_token(uint64_t token[2])
{
    size_t filled = 0;
    while (filled < 2 * sizeof token[0]) {
        ssize_t got = getrandom((uint8_t *)token + filled, 2 * sizeof token[0] - filled, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        filled += (size_t)got;
    }
    return 0;
}

int exports_add(const struct export *export)
{
    pthread_mutex_lock(&exports_lock);
    if (export_count == export_capacity) {
        size_t capacity = export_capacity == 0 ? 8 : export_capacity * 2;
        struct export *grown = realloc(exports, capacity * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&exports_lock);
            errno = ENOMEM;
            return -1;
        }
        exports = grown;
        export_capacity = capacity;
    }
    exports[export_count++] = *export;
    pthread_mutex_unlock(&exports_lock);
    return 0;
}

/* The modes of windows removed while others live, indexed by mode (nine bits): their memory stays
 * in the address-space file until the last window goes. */
static bool retired_permits[01000];

bool exports_remove(uint64_t segment)
{
    bool found = false;
    pthread_mutex_lock(&exports_lock);
    for (size_t index = 0; index < export_count; index++) {
        if (exports[index].segment == segment) {
            uint32_t permit = exports[index].permit & 0777;
            exports[index] = exports[--export_count];
            if (export_count > 0)
                retired_permits[permit] = true;
            else
                memset(retired_permits, 0, sizeof retired_permits);
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&exports_lock);
    return found;
}

size_t exports_retired_permits(uint32_t *into, size_t capacity)
{
    size_t count = 0;
    pthread_mutex_lock(&exports_lock);
    for (uint32_t permit = 0; permit < 01000; permit++)
        if (retired_permits[permit] && count < capacity)
            into[count++] = permit;
    pthread_mutex_unlock(&exports_lock);
    return count;
}

bool exports_contains(uint64_t segment)
{
    bool found = false;
    pthread_mutex_lock(&exports_lock);
    for (size_t index = 0; index < export_count && !found; index++)
        found = exports[index].segment == segment;
    pthread_mutex_unlock(&exports_lock);
    return found;
}

void exports_begin_change(void) { pthread_rwlock_rdlock(&changes_lock); }
void exports_end_change(void) { pthread_rwlock_unlock(&changes_lock); }
void exports_begin_restore(void) { pthread_rwlock_wrlock(&changes_lock); }
void exports_end_restore(void) { pthread_rwlock_unlock(&changes_lock); }

size_t exports_list(struct export *into, size_t capacity)
{
    pthread_mutex_lock(&exports_lock);
    size_t count = export_count;
    for (size_t index = 0; index < count && index < capacity; index++)
        into[index] = exports[index];
    pthread_mutex_unlock(&exports_lock);
    return count;
}

void exports_reset_after_fork(void)
{
    pthread_mutex_init(&exports_lock, NULL);
    pthread_rwlock_init(&changes_lock, NULL);
    export_count = 0;
    memset(retired_permits, 0, sizeof retired_permits);
}
