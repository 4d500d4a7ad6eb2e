#include "attachments.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

static pthread_mutex_t attachments_lock = PTHREAD_MUTEX_INITIALIZER;
static struct attachment *attachments;
static size_t attachment_count, attachment_capacity;

int attachments_add(struct attachment attachment)
{
    pthread_mutex_lock(&attachments_lock);
    if (attachment_count == attachment_capacity) {
        size_t capacity = attachment_capacity == 0 ? 64 : attachment_capacity * 2;
        struct attachment *grown = realloc(attachments, capacity * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&attachments_lock);
            errno = ENOMEM;
            return -1;
        }
        attachments = grown;
        attachment_capacity = capacity;
    }
    attachments[attachment_count++] = attachment;
    pthread_mutex_unlock(&attachments_lock);
    return 0;
}

void attachments_for_each(void (*visit)(const struct attachment *attachment, void *context), void *context)
{
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count; index++)
        visit(&attachments[index], context);
    pthread_mutex_unlock(&attachments_lock);
}

static void remove_at(size_t index) { attachments[index] = attachments[--attachment_count]; }

bool attachments_find_containing(uintptr_t address, struct attachment *attachment)
{
    bool found = false;
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count && !found; index++) {
        if (address >= attachments[index].address && address - attachments[index].address < attachments[index].length) {
            *attachment = attachments[index];
            found = true;
        }
    }
    pthread_mutex_unlock(&attachments_lock);
    return found;
}

bool attachments_take_containing(uintptr_t address, struct attachment *attachment)
{
    bool found = false;
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count; index++) {
        if (address >= attachments[index].address && address - attachments[index].address < attachments[index].length) {
            *attachment = attachments[index];
            remove_at(index);
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&attachments_lock);
    return found;
}

bool attachments_take_by_apid(uint64_t apid, struct attachment *attachment)
{
    bool found = false;
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count; index++) {
        if (attachments[index].apid == apid) {
            *attachment = attachments[index];
            remove_at(index);
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&attachments_lock);
    return found;
}

void attachments_forget_overlapping(uintptr_t address, size_t length)
{
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count;) {
        const struct attachment *existing = &attachments[index];
        if (existing->address < address + length && address < existing->address + existing->length)
            remove_at(index);
        else
            index++;
    }
    pthread_mutex_unlock(&attachments_lock);
}

void attachments_forget_broker_ids(void)
{
    pthread_mutex_lock(&attachments_lock);
    for (size_t index = 0; index < attachment_count; index++)
        attachments[index].broker_attachment = 0;
    pthread_mutex_unlock(&attachments_lock);
}

void attachments_forget_all(void)
{
    pthread_mutex_lock(&attachments_lock);
    attachment_count = 0;
    pthread_mutex_unlock(&attachments_lock);
}

void attachments_reset_after_fork(void)
{
    /* Another thread of the parent may have held the lock at fork: it does not exist here. */
    pthread_mutex_init(&attachments_lock, NULL);
    attachments_forget_all();
}
