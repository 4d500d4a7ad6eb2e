// Declarations the Swift side cannot get from `import Glibc` on Linux: GNU-only calls, function-like
// macros (CMSG_*), packed structs (epoll_event) and raw syscalls. Every name is prefixed `cxpmem_`.
// The definitions live in shim.c, which is compiled with _GNU_SOURCE.
#ifndef CXPMEM_SHIM_H
#define CXPMEM_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>

// memfd and seals
extern const unsigned int cxpmem_MFD_CLOEXEC;
extern const unsigned int cxpmem_MFD_ALLOW_SEALING;
extern const unsigned int cxpmem_MFD_HUGETLB;
extern const int cxpmem_F_ADD_SEALS;
extern const int cxpmem_F_GET_SEALS;
extern const int cxpmem_F_SEAL_SEAL;
// lseek origins for a sparse file's data and holes.
extern const int cxpmem_SEEK_DATA;
extern const int cxpmem_SEEK_HOLE;
extern const int cxpmem_F_SEAL_SHRINK;
extern const int cxpmem_F_SEAL_GROW;
extern const int cxpmem_F_SEAL_WRITE;
extern const int cxpmem_F_SEAL_FUTURE_WRITE;
int cxpmem_memfd_create(const char *name, unsigned int flags);

// Ancillary data (the CMSG_* macros as functions).
struct cmsghdr *cxpmem_CMSG_FIRSTHDR(const struct msghdr *msg);
struct cmsghdr *cxpmem_CMSG_NXTHDR(const struct msghdr *msg, const struct cmsghdr *cmsg);
unsigned char *cxpmem_CMSG_DATA(const struct cmsghdr *cmsg);
size_t cxpmem_CMSG_SPACE(size_t length);
size_t cxpmem_CMSG_LEN(size_t length);
extern const int cxpmem_SCM_RIGHTS;
extern const int cxpmem_MSG_CMSG_CLOEXEC;

// Peer credentials of a Unix socket (struct ucred and SO_PEERGROUPS).
int cxpmem_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid);
/// Fills up to `capacity` supplementary group ids; returns the count, or -1 with errno.
int cxpmem_peer_groups(int fd, gid_t *groups, int capacity);

// epoll, with the packed epoll_event unpacked into two plain arrays.
extern const uint32_t cxpmem_EPOLLIN;
extern const uint32_t cxpmem_EPOLLOUT;
extern const uint32_t cxpmem_EPOLLERR;
extern const uint32_t cxpmem_EPOLLHUP;
extern const uint32_t cxpmem_EPOLLRDHUP;
extern const uint32_t cxpmem_EPOLLPRI;
int cxpmem_epoll_create(void);
int cxpmem_epoll_add(int epfd, int fd, uint32_t events, uint64_t token);
int cxpmem_epoll_modify(int epfd, int fd, uint32_t events, uint64_t token);
int cxpmem_epoll_remove(int epfd, int fd);
int cxpmem_epoll_wait(int epfd, uint32_t *events, uint64_t *tokens, int capacity, int timeout_ms);

/// accept4 with SOCK_CLOEXEC | SOCK_NONBLOCK.
int cxpmem_accept(int fd);

// Process handles, signals, randomness.
int cxpmem_pidfd_open(pid_t pid);
int cxpmem_signalfd_for(const int *signals, int count);
/// Reads one pending signal from a signalfd; returns its number, 0 if none is pending, -1 with errno.
int cxpmem_signalfd_read(int fd);
ssize_t cxpmem_getrandom(void *buffer, size_t length);
ssize_t cxpmem_process_vm_readv(pid_t pid, void *local, size_t length, const void *remote);

// Memory mapping constants that Glibc's module map does not carry everywhere.
extern const int cxpmem_MAP_FIXED_NOREPLACE;
/* mremap(old, length, length, MREMAP_MAYMOVE | MREMAP_FIXED, new): mremap is variadic, which Swift
 * cannot call. Returns the new address or MAP_FAILED with errno. */
void *cxpmem_mremap_replacing(void *old_address, size_t length, void *new_address);
/* mlock2(MLOCK_ONFAULT): locks pages as they are touched, without populating the range. */
int cxpmem_mlock_on_fault(void *address, size_t length);
extern const int cxpmem_MAP_POPULATE;

// userfaultfd in minor-fault mode on shmem: the mechanism behind the `.block` access policy.
/// Opens a user-mode-only userfaultfd with UFFD_FEATURE_MINOR_SHMEM negotiated; -1 with errno if the
/// kernel or its settings do not allow it (EOPNOTSUPP when the feature is missing).
int cxpmem_uffd_open(void);
/// Registers a range so that touches sleep: minor faults (pages the file has) and missing ones (pages
/// it lacks), or minor faults only where the kernel refuses both on that mapping.
int cxpmem_uffd_register_suspend(int uffd, void *address, size_t length);
int cxpmem_uffd_unregister(int uffd, void *address, size_t length);
int cxpmem_uffd_wake(int uffd, void *address, size_t length);

// userfaultfd in write-protect mode on shmem: how free-page hints see the owner's writes.
/// Opens a userfaultfd with shmem write-protection negotiated: from /dev/userfaultfd, else in full,
/// else user mode only (then *catches_kernel_writes is 0: a system call writing into a protected
/// page fails with EFAULT instead of waiting). -1 with errno if none works.
int cxpmem_uffd_open_write_tracking(int *catches_kernel_writes);
int cxpmem_uffd_register_write_protect(int uffd, void *address, size_t length);
/// Write-protects the range (protect != 0) or lifts the protection, which wakes the writers waiting.
int cxpmem_uffd_write_protect(int uffd, void *address, size_t length, int protect);
/// Waits for the next write fault (1, *address set) or until `stop` is readable (0); -1 on error.
int cxpmem_uffd_next_write_fault(int uffd, int stop, uint64_t *address);
/// An eventfd (close-on-exec, non-blocking) that `cxpmem_uffd_next_write_fault` watches for a stop.
int cxpmem_stop_signal_open(void);
/// fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE).
int cxpmem_punch_hole(int fd, off_t offset, off_t length);
// fallocate(fd, 0, ...): gives every page of the range a page now (ENOSPC when none is to be had).
int cxpmem_allocate_pages(int fd, off_t offset, off_t length);

/// A load the compiler may not hoist out of a loop: for tests and benchmarks that watch memory
/// another process writes.
uint64_t cxpmem_volatile_load64(const void *address);
void cxpmem_volatile_store64(void *address, uint64_t value);
/// CLOCK_MONOTONIC in nanoseconds: comparable across processes on this machine.
uint64_t cxpmem_monotonic_nanoseconds(void);
/// memcpy of non-overlapping buffers with non-temporal stores (x86-64; a plain memcpy elsewhere):
/// the destination's lines are written without first being read into the cache.
void cxpmem_copy_streaming(void *destination, const void *source, size_t length);

// Threads: starts a detached pthread running `body(context)`.
int cxpmem_start_detached_thread(void (*body)(void *), void *context);

// CPU affinity of the calling thread, a raw cpu_set_t of `size` bytes; 0 or -1 with errno.
int cxpmem_get_thread_affinity(void *set, size_t size);
int cxpmem_set_thread_affinity(const void *set, size_t size);

// The CPU the calling thread runs on (sched_getcpu is GNU-only), or -1.
int cxpmem_current_cpu(void);

// madvise(MADV_POPULATE_READ) (Linux 5.14): maps every page of the range into this process's page
// table without writing it, so that move_pages can report where each one is.
int cxpmem_populate_read(void *address, size_t length);

#endif
