/* Preloaded (LD_PRELOAD) into a test run, this stands in for the memory hooks MPI stacks install:
 * UCX's libucm replaces mmap, munmap, mremap and madvise in every loaded library, and its mremap
 * forwards only four arguments, so a caller's MREMAP_FIXED address never reaches the kernel. The
 * library must not depend on those symbols (src/raw_memory.h): here a call to any of them from
 * libxpmem is reported on stderr and aborts the process; every other caller gets the real call.
 *
 * It also stands in for UCX's ucm_vm_munmap and Open MPI's opal_mem_hooks_release_hook, through which
 * the library tells those stacks of pages it replaced (src/hook_notices.h): the ranges told are kept,
 * and memory_hooks_told and memory_hooks_told_open_mpi answer whether they cover a range. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static void refuse_calls_from_libxpmem(const char *function, void *caller)
{
    Dl_info where;
    if (dladdr(caller, &where) == 0 || where.dli_fname == NULL)
        return;
    const char *slash = strrchr(where.dli_fname, '/');
    const char *name = slash != NULL ? slash + 1 : where.dli_fname;
    if (strncmp(name, "libxpmem.so", strlen("libxpmem.so")) != 0)
        return;
    static const char prefix[] = "memory hooks: libxpmem called the replaceable ";
    (void)!write(2, prefix, sizeof prefix - 1);
    (void)!write(2, function, strlen(function));
    (void)!write(2, "\n", 1);
    abort();
}

void *mmap(void *address, size_t length, int protection, int flags, int descriptor, off_t offset)
{
    refuse_calls_from_libxpmem("mmap", __builtin_return_address(0));
    return (void *)syscall(SYS_mmap, address, length, protection, flags, descriptor, offset);
}

int munmap(void *address, size_t length)
{
    refuse_calls_from_libxpmem("munmap", __builtin_return_address(0));
    return (int)syscall(SYS_munmap, address, length);
}

void *mremap(void *address, size_t old_length, size_t new_length, int flags, ...)
{
    refuse_calls_from_libxpmem("mremap", __builtin_return_address(0));
    void *new_address = NULL;
    if (flags & MREMAP_FIXED) {
        va_list arguments;
        va_start(arguments, flags);
        new_address = va_arg(arguments, void *);
        va_end(arguments);
    }
    return (void *)syscall(SYS_mremap, address, old_length, new_length, flags, new_address);
}

int madvise(void *address, size_t length, int advice)
{
    refuse_calls_from_libxpmem("madvise", __builtin_return_address(0));
    return (int)syscall(SYS_madvise, address, length, advice);
}

/* The ranges told through one receiver; past the room, "everything" (as the library itself does). */
struct told_ranges {
    pthread_mutex_t lock;
    struct {
        uintptr_t start, length;
    } ranges[256];
    unsigned count;
    bool everything;
};

static struct told_ranges told_ucx = {.lock = PTHREAD_MUTEX_INITIALIZER};
static struct told_ranges told_open_mpi = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void keep(struct told_ranges *told, void *address, size_t length)
{
    pthread_mutex_lock(&told->lock);
    if (told->count == sizeof told->ranges / sizeof told->ranges[0]) {
        told->everything = true;
    } else {
        told->ranges[told->count].start = (uintptr_t)address;
        told->ranges[told->count].length = length;
        told->count++;
    }
    pthread_mutex_unlock(&told->lock);
}

void ucm_vm_munmap(void *address, size_t length) { keep(&told_ucx, address, length); }

void opal_mem_hooks_release_hook(void *address, size_t length, bool from_alloc)
{
    if (!from_alloc) /* what Open MPI's own hooks pass for an munmap */
        keep(&told_open_mpi, address, length);
}

/* Whether every page of [start, start + length) lies in a range told so far. */
static bool covered(struct told_ranges *told, uintptr_t start, size_t length)
{
    pthread_mutex_lock(&told->lock);
    bool covered = true;
    long page = sysconf(_SC_PAGESIZE);
    for (uintptr_t at = start; covered && !told->everything && at < start + length; at += (uintptr_t)page) {
        covered = false;
        for (unsigned index = 0; index < told->count && !covered; index++)
            covered = at >= told->ranges[index].start && at - told->ranges[index].start < told->ranges[index].length;
    }
    pthread_mutex_unlock(&told->lock);
    return covered;
}

bool memory_hooks_told(uintptr_t start, size_t length) { return covered(&told_ucx, start, length); }
bool memory_hooks_told_open_mpi(uintptr_t start, size_t length) { return covered(&told_open_mpi, start, length); }
