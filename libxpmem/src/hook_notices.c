#include "hook_notices.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <string.h>

#include "pages.h"

static struct hook_notices_batch recorded;
/* More ranges than the list holds: tell everything. */
static bool overflowed;

void hook_notices_record(uint64_t start, uint64_t length)
{
    if (length == 0 || overflowed)
        return;
    if (recorded.count > 0) {
        uint64_t *last_length = &recorded.ranges[recorded.count - 1].length;
        if (recorded.ranges[recorded.count - 1].start + *last_length == start) {
            *last_length += length;
            return;
        }
    }
    if (recorded.count == sizeof recorded.ranges / sizeof recorded.ranges[0]) {
        overflowed = true;
        return;
    }
    recorded.ranges[recorded.count].start = start;
    recorded.ranges[recorded.count].length = length;
    recorded.count++;
}

void hook_notices_take(struct hook_notices_batch *batch)
{
    if (overflowed) {
        batch->count = 1;
        batch->ranges[0].start = 0;
        batch->ranges[0].length = ADDRESS_SPACE_LIMIT;
    } else {
        memcpy(batch, &recorded, sizeof *batch);
    }
    recorded.count = 0;
    overflowed = false;
}

void hook_notices_tell(const struct hook_notices_batch *batch)
{
    if (batch->count == 0)
        return;
    /* Looked up each time: UCX is often loaded after this library (Open MPI opens its components
     * with dlopen), and not at all by most programs. */
    void (*vm_munmap)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "ucm_vm_munmap");
    if (vm_munmap == NULL)
        return;
    for (uint32_t index = 0; index < batch->count; index++)
        vm_munmap((void *)(uintptr_t)batch->ranges[index].start, (size_t)batch->ranges[index].length);
}
