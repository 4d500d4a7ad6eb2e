#include "window_map.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "raw_memory.h"

static pthread_once_t hole_once = PTHREAD_ONCE_INIT;
/* [0] read-only, [1] read-write: a read-only window's holes must refuse PROT_WRITE like its data. */
static int hole_files[2] = {-1, -1};
static int hole_error;

static void make_hole_files(void)
{
    int fd = memfd_create("xpmem-hole", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        hole_error = errno;
        return;
    }
    /* Nobody may give it pages (through /proc/self/fd), or holes would stop faulting. */
    fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int read_only = open(path, O_RDONLY | O_CLOEXEC);
    if (read_only < 0) {
        hole_error = errno;
        close(fd);
        return;
    }
    hole_files[0] = read_only;
    hole_files[1] = fd;
}

static int hole_descriptor(bool writable)
{
    pthread_once(&hole_once, make_hole_files);
    if (hole_files[writable ? 1 : 0] < 0)
        errno = hole_error;
    return hole_files[writable ? 1 : 0];
}

/* A read-only window maps the file (and its holes) privately: the kernel registers a mapping for missing-page
 * faults (import_faults.h) only if it could be made writable, and a shared mapping of a read-only
 * descriptor cannot. A private one can, but made writable it writes copies of its own, never the
 * file: the exporter's bytes stay out of the importer's reach either way. Until written, its pages
 * are the file's very pages, so it sees every write of the exporter's. Its holes map the empty file
 * privately too, so that the whole window can be made writable; past the file's end they still
 * raise SIGBUS. */
static int file_sharing(int protection) { return (protection & PROT_WRITE) != 0 ? MAP_SHARED : MAP_PRIVATE; }

void *window_map(void *address, size_t length, int protection, int descriptor, uint64_t window_offset,
                 const struct wire_extent *extents, uint32_t count)
{
    int fixed = address != NULL ? MAP_FIXED : 0;
    if (count == 1 && extents[0].start == window_offset && extents[0].length == length)
        return raw_mmap(address, length, protection, file_sharing(protection) | fixed, descriptor, (off_t)window_offset);

    /* Holes first, over the whole window: that also reserves it in one step. */
    int holes = hole_descriptor((protection & PROT_WRITE) != 0);
    if (holes < 0)
        return MAP_FAILED;
    uint8_t *window = raw_mmap(address, length, protection, file_sharing(protection) | fixed, holes, 0);
    if (window == MAP_FAILED)
        return MAP_FAILED;
    for (uint32_t index = 0; index < count; index++) {
        uint8_t *at = window + (extents[index].start - window_offset);
        if (raw_mmap(at, extents[index].length, protection, file_sharing(protection) | MAP_FIXED, descriptor,
                     (off_t)extents[index].start) == MAP_FAILED) {
            int saved = errno;
            raw_munmap(window, length);
            errno = saved;
            return MAP_FAILED;
        }
    }
    return window;
}
