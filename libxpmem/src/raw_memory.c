#include "raw_memory.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

void *raw_mmap(void *address, size_t length, int protection, int flags, int descriptor, off_t offset)
{
    return (void *)syscall(SYS_mmap, address, length, protection, flags, descriptor, offset);
}

int raw_munmap(void *address, size_t length) { return (int)syscall(SYS_munmap, address, length); }

void *raw_mremap(void *address, size_t old_length, size_t new_length, int flags, void *new_address)
{
    return (void *)syscall(SYS_mremap, address, old_length, new_length, flags, new_address);
}

int raw_madvise(void *address, size_t length, int advice) { return (int)syscall(SYS_madvise, address, length, advice); }
