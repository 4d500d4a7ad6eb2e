/* userfaultfd, the few operations the library uses. Opened close-on-exec and non-blocking; when the
 * kernel refuses an unprivileged process (vm.unprivileged_userfaultfd=0) it is opened again for
 * user-mode faults only, which is all the library needs: a fault the kernel itself takes inside a
 * system call on such a range then fails that call with EFAULT instead of waiting. */
#ifndef XPMEM_UFFD_H
#define XPMEM_UFFD_H

#include <stdint.h>

/* Returns the descriptor with `features` enabled, or -1 with errno. */
int uffd_open(uint64_t features);
/* `mode` is UFFDIO_REGISTER_MODE_*. */
int uffd_register(int descriptor, uint64_t start, uint64_t length, uint64_t mode);
int uffd_unregister(int descriptor, uint64_t start, uint64_t length);
/* Wakes the threads waiting on faults in the range, to retry their access. */
int uffd_wake(int descriptor, uint64_t start, uint64_t length);

#endif
