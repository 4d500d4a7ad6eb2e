#include "fork_snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "address_space_file.h"
#include "backing.h"
#include "debug_log.h"
#include "hook_notices.h"
#include "private_area.h"
#include "proc_maps.h"
#include "raw_memory.h"

/* How long the parent waits for the child to copy before going on without it. */
#define CHILD_COPY_TIMEOUT_MS 30000

/* The pipe the child says "copied" on; -1 when this process backs nothing. */
static int copied_pipe[2] = {-1, -1};

/* Any mapping of the file: backed memory (offset == address), a backed mapping moved by mremap whose
 * event was not acted on yet, or an attachment of this process's own segment, read-only ones
 * included (those map it privately: window_map.c). The child shares none. */
static bool maps_our_file(const struct maps_entry *entry, const struct address_space_file *file)
{
    return entry->inode == (uint64_t)file->inode && entry->device_major == major(file->device)
           && entry->device_minor == minor(file->device);
}

/* Replaces one backed mapping with private memory holding the same bytes and protection. */
static void make_private(const struct maps_entry *entry, int file_descriptor)
{
    uint64_t length = entry->end - entry->start;
    uint8_t *copy = raw_mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED) {
        debug_log("fork: cannot copy backed memory at 0x%llx: %s; the child shares it with the parent",
                  (unsigned long long)entry->start, strerror(errno));
        return;
    }
    if (!entry->readable)
        mprotect((void *)(uintptr_t)entry->start, length, PROT_READ);
    /* Only the pages the file holds: the rest reads as zero in the copy too. */
    uint64_t file_start = entry->offset, file_end = entry->offset + length;
    for (off_t data = (off_t)file_start; (uint64_t)data < file_end;) {
        data = lseek(file_descriptor, data, SEEK_DATA);
        if (data < 0 || (uint64_t)data >= file_end)
            break;
        off_t hole = lseek(file_descriptor, data, SEEK_HOLE);
        if (hole < 0 || (uint64_t)hole > file_end)
            hole = (off_t)file_end;
        uint64_t at = (uint64_t)data - file_start;
        memcpy(copy + at, (const void *)(uintptr_t)(entry->start + at), (size_t)(hole - data));
        data = hole;
    }
    int protection = (entry->readable ? PROT_READ : 0) | (entry->writable ? PROT_WRITE : 0);
    mprotect(copy, length, protection);
    if (raw_mremap(copy, length, length, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)(uintptr_t)entry->start) == MAP_FAILED) {
        debug_log("fork: cannot put the copy of 0x%llx in place: %s", (unsigned long long)entry->start, strerror(errno));
        raw_munmap(copy, length);
    }
}

static void make_every_backed_mapping_private(void)
{
    struct private_area *area = private_area_get();
    struct address_space_file file = address_space_file_current();
    ssize_t maps_length = area == NULL ? -1 : proc_maps_read(area);
    if (maps_length < 0)
        return;
    const char *cursor = area->maps_text, *end = cursor + maps_length;
    struct maps_entry entry;
    /* Replacing a mapping changes the maps text only at that entry: the cursor stays valid, as
     * the text was read once, before any change. */
    while (proc_maps_next(&cursor, end, &entry))
        if (maps_our_file(&entry, &file))
            make_private(&entry, file.descriptor);
}

/* No lock of the library's is held across fork: glibc takes malloc's locks after the prepare
 * handlers, and a thread holding one may be waiting (in munmap or brk of backed memory) for the watch
 * thread, which must not then wait for us. Backing changes memory only while the other threads are
 * stopped, and a thread in fork is not stopped, so the child never sees one half done; the buffers
 * of the private area it uses, it fills afresh. */
void fork_snapshot_prepare(void)
{
    if (address_space_file_current().descriptor >= 0 && pipe2(copied_pipe, O_CLOEXEC) < 0)
        copied_pipe[0] = copied_pipe[1] = -1;
}

void fork_snapshot_parent(void)
{
    if (copied_pipe[0] >= 0) {
        close(copied_pipe[1]);
        struct pollfd readable = {.fd = copied_pipe[0], .events = POLLIN};
        int ready;
        do
            ready = poll(&readable, 1, CHILD_COPY_TIMEOUT_MS);
        while (ready < 0 && errno == EINTR);
        if (ready == 0)
            debug_log("fork: the child did not copy its backed memory within %d s", CHILD_COPY_TIMEOUT_MS / 1000);
        close(copied_pipe[0]);
        copied_pipe[0] = copied_pipe[1] = -1;
    }
}

void fork_snapshot_child(void)
{
    backing_lock_reset();
    hook_notices_reset_after_fork();
    if (copied_pipe[0] < 0)
        return;
    close(copied_pipe[0]);
    struct private_area *area = private_area_get();
    /* This thread's stack may be backed memory: copy on the library's own stack (the event thread
     * that used it does not exist in the child). */
    if (area != NULL)
        private_area_run_on_stack(area->stack, area->stack_size, make_every_backed_mapping_private);
    /* Closing our end tells the parent (it reads end-of-file). */
    close(copied_pipe[1]);
    copied_pipe[0] = copied_pipe[1] = -1;
}
