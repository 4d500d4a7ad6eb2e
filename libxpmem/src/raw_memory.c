#include "raw_memory.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* SYS_mmap with a byte offset and six plain arguments: the 64-bit ABIs except s390x (whose mmap takes
 * a pointer to its arguments); 32-bit ones have mmap2 with a page offset instead. */
#if __SIZEOF_POINTER__ != 8 || defined(__s390x__)
#error "raw_mmap assumes a 64-bit ABI whose mmap system call takes a byte offset"
#endif

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
