// GNU-only definitions behind CXPMEMShim.h. _GNU_SOURCE must come before any system header.
#define _GNU_SOURCE
#include "CXPMEMShim.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <linux/userfaultfd.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <stdint.h>

const unsigned int cxpmem_MFD_CLOEXEC = MFD_CLOEXEC;
const unsigned int cxpmem_MFD_ALLOW_SEALING = MFD_ALLOW_SEALING;
const unsigned int cxpmem_MFD_HUGETLB = MFD_HUGETLB;
const int cxpmem_F_ADD_SEALS = F_ADD_SEALS;
const int cxpmem_F_GET_SEALS = F_GET_SEALS;
const int cxpmem_F_SEAL_SEAL = F_SEAL_SEAL;
const int cxpmem_SEEK_DATA = SEEK_DATA;
const int cxpmem_SEEK_HOLE = SEEK_HOLE;
const int cxpmem_F_SEAL_SHRINK = F_SEAL_SHRINK;
const int cxpmem_F_SEAL_GROW = F_SEAL_GROW;
const int cxpmem_F_SEAL_WRITE = F_SEAL_WRITE;
#ifdef F_SEAL_FUTURE_WRITE
const int cxpmem_F_SEAL_FUTURE_WRITE = F_SEAL_FUTURE_WRITE;
#else
const int cxpmem_F_SEAL_FUTURE_WRITE = 0x0010;
#endif

int cxpmem_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }

struct cmsghdr *cxpmem_CMSG_FIRSTHDR(const struct msghdr *msg) { return CMSG_FIRSTHDR(msg); }
struct cmsghdr *cxpmem_CMSG_NXTHDR(const struct msghdr *msg, const struct cmsghdr *cmsg) {
    return CMSG_NXTHDR((struct msghdr *)msg, (struct cmsghdr *)cmsg);
}
unsigned char *cxpmem_CMSG_DATA(const struct cmsghdr *cmsg) { return CMSG_DATA((struct cmsghdr *)cmsg); }
size_t cxpmem_CMSG_SPACE(size_t length) { return CMSG_SPACE(length); }
size_t cxpmem_CMSG_LEN(size_t length) { return CMSG_LEN(length); }
const int cxpmem_SCM_RIGHTS = SCM_RIGHTS;
const int cxpmem_MSG_CMSG_CLOEXEC = MSG_CMSG_CLOEXEC;

int cxpmem_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid) {
    struct ucred cred;
    socklen_t length = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) return -1;
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}

int cxpmem_peer_groups(int fd, gid_t *groups, int capacity) {
    socklen_t length = (socklen_t)(sizeof(gid_t) * (size_t)capacity);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &length) != 0) return -1;
    return (int)(length / sizeof(gid_t));
}

const uint32_t cxpmem_EPOLLIN = EPOLLIN;
const uint32_t cxpmem_EPOLLOUT = EPOLLOUT;
const uint32_t cxpmem_EPOLLERR = EPOLLERR;
const uint32_t cxpmem_EPOLLHUP = EPOLLHUP;
const uint32_t cxpmem_EPOLLRDHUP = EPOLLRDHUP;
const uint32_t cxpmem_EPOLLPRI = EPOLLPRI;

int cxpmem_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

static int epoll_control(int epfd, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event event;
    memset(&event, 0, sizeof(event));
    event.events = events;
    event.data.u64 = token;
    return epoll_ctl(epfd, op, fd, &event);
}
int cxpmem_epoll_add(int epfd, int fd, uint32_t events, uint64_t token) {
    return epoll_control(epfd, EPOLL_CTL_ADD, fd, events, token);
}
int cxpmem_epoll_modify(int epfd, int fd, uint32_t events, uint64_t token) {
    return epoll_control(epfd, EPOLL_CTL_MOD, fd, events, token);
}
int cxpmem_epoll_remove(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int cxpmem_epoll_wait(int epfd, uint32_t *events, uint64_t *tokens, int capacity, int timeout_ms) {
    struct epoll_event ready[64];
    if (capacity > 64) capacity = 64;
    int count = epoll_wait(epfd, ready, capacity, timeout_ms);
    for (int i = 0; i < count; i++) {
        events[i] = ready[i].events;
        tokens[i] = ready[i].data.u64;
    }
    return count;
}

int cxpmem_accept(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK); }

int cxpmem_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int cxpmem_signalfd_for(const int *signals, int count) {
    sigset_t mask;
    sigemptyset(&mask);
    for (int i = 0; i < count; i++) sigaddset(&mask, signals[i]);
    // The signals must be blocked so that they queue on the descriptor instead of running a handler.
    if (pthread_sigmask(SIG_BLOCK, &mask, NULL) != 0) return -1;
    return signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
}

int cxpmem_signalfd_read(int fd) {
    struct signalfd_siginfo info;
    ssize_t n = read(fd, &info, sizeof(info));
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    if ((size_t)n != sizeof(info)) { errno = EIO; return -1; }
    return (int)info.ssi_signo;
}

ssize_t cxpmem_getrandom(void *buffer, size_t length) { return getrandom(buffer, length, 0); }

ssize_t cxpmem_process_vm_readv(pid_t pid, void *local, size_t length, const void *remote) {
    struct iovec mine = {.iov_base = local, .iov_len = length};
    struct iovec theirs = {.iov_base = (void *)remote, .iov_len = length};
    return process_vm_readv(pid, &mine, 1, &theirs, 1, 0);
}

const int cxpmem_MAP_FIXED_NOREPLACE = MAP_FIXED_NOREPLACE;

void *cxpmem_mremap_replacing(void *old_address, size_t length, void *new_address)
{
    return mremap(old_address, length, length, MREMAP_MAYMOVE | MREMAP_FIXED, new_address);
}
const int cxpmem_MAP_POPULATE = MAP_POPULATE;
int cxpmem_mlock_on_fault(void *address, size_t length) { return mlock2(address, length, MLOCK_ONFAULT); }

int cxpmem_uffd_open(void) {
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0) return -1;
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_MINOR_SHMEM};
    if (ioctl(fd, UFFDIO_API, &api) != 0 || !(api.features & UFFD_FEATURE_MINOR_SHMEM)) {
        int saved = errno ? errno : EOPNOTSUPP;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int cxpmem_uffd_register_suspend(int uffd, void *address, size_t length) {
    /* Minor faults: pages the file has. Missing faults too: a page the file lacks (a hole of a
     * sparse segment, or every page of a hugetlb file given back to the pool during a move) would
     * otherwise be allocated by the touch instead of sleeping. */
    struct uffdio_register request = {
        .range = {.start = (unsigned long)address, .len = length},
        .mode = UFFDIO_REGISTER_MODE_MINOR | UFFDIO_REGISTER_MODE_MISSING,
    };
    if (ioctl(uffd, UFFDIO_REGISTER, &request) == 0)
        return 0;
    if (errno != EINVAL)
        return -1;
    request.mode = UFFDIO_REGISTER_MODE_MINOR;
    return ioctl(uffd, UFFDIO_REGISTER, &request);
}

int cxpmem_uffd_unregister(int uffd, void *address, size_t length) {
    struct uffdio_range range = {.start = (unsigned long)address, .len = length};
    return ioctl(uffd, UFFDIO_UNREGISTER, &range);
}

int cxpmem_uffd_wake(int uffd, void *address, size_t length) {
    struct uffdio_range range = {.start = (unsigned long)address, .len = length};
    return ioctl(uffd, UFFDIO_WAKE, &range);
}

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

/* Negotiates write-protection of shmem, and of unpopulated pages too when `unpopulated` (Linux 6.4+;
 * for shmem, older kernels protect them anyway with a page-table marker). */
static int negotiate_write_protection(int fd, int unpopulated) {
    struct uffdio_api api = {.api = UFFD_API,
                             .features = UFFD_FEATURE_WP_HUGETLBFS_SHMEM | (unpopulated ? UFFD_FEATURE_WP_UNPOPULATED : 0)};
    if (ioctl(fd, UFFDIO_API, &api) != 0) return -1;
    if (!(api.features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM)) {
        errno = EOPNOTSUPP;
        return -1;
    }
    return 0;
}

static int open_userfaultfd(int mode) {
    if (mode == 0) {
        int device = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (device < 0) return -1;
        int fd = ioctl(device, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        int saved = errno;
        close(device);
        errno = saved;
        return fd;
    }
    return (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | (mode == 2 ? UFFD_USER_MODE_ONLY : 0));
}

int cxpmem_uffd_open_write_tracking(int *catches_kernel_writes) {
    /* /dev/userfaultfd (if its mode lets us), then the system call in full (privileged, or
     * vm.unprivileged_userfaultfd=1), then user mode only. A kernel that lacks a feature refuses the
     * whole request, and a userfaultfd takes one UFFDIO_API only: each try has a fresh descriptor. */
    int last_errno = EPERM;
    for (int mode = 0; mode < 3; mode++) {
        for (int unpopulated = 1; unpopulated >= 0; unpopulated--) {
            int fd = open_userfaultfd(mode);
            if (fd < 0) {
                last_errno = errno;
                break;
            }
            if (negotiate_write_protection(fd, unpopulated) == 0) {
                *catches_kernel_writes = mode < 2;
                return fd;
            }
            last_errno = errno;
            close(fd);
        }
    }
    errno = last_errno;
    return -1;
}

int cxpmem_uffd_register_write_protect(int uffd, void *address, size_t length) {
    struct uffdio_register request = {
        .range = {.start = (unsigned long)address, .len = length},
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    return ioctl(uffd, UFFDIO_REGISTER, &request);
}

int cxpmem_uffd_write_protect(int uffd, void *address, size_t length, int protect) {
    struct uffdio_writeprotect request = {
        .range = {.start = (unsigned long)address, .len = length},
        .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    return ioctl(uffd, UFFDIO_WRITEPROTECT, &request);
}

int cxpmem_uffd_next_write_fault(int uffd, int stop, uint64_t *address) {
    for (;;) {
        struct pollfd wait[2] = {{.fd = uffd, .events = POLLIN}, {.fd = stop, .events = POLLIN}};
        if (poll(wait, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (wait[1].revents) return 0;
        if (wait[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
            errno = EBADF;
            return -1;
        }
        struct uffd_msg message;
        ssize_t got = read(uffd, &message, sizeof message);
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (got != (ssize_t)sizeof message) return -1;
        if (message.event == UFFD_EVENT_PAGEFAULT && (message.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
            *address = message.arg.pagefault.address;
            return 1;
        }
    }
}

int cxpmem_stop_signal_open(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

int cxpmem_punch_hole(int fd, off_t offset, off_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

int cxpmem_allocate_pages(int fd, off_t offset, off_t length) { return fallocate(fd, 0, offset, length); }

struct thread_start {
    void (*body)(void *);
    void *context;
};

static void *thread_trampoline(void *argument) {
    struct thread_start start = *(struct thread_start *)argument;
    free(argument);
    start.body(start.context);
    return NULL;
}

int cxpmem_start_detached_thread(void (*body)(void *), void *context) {
    struct thread_start *start = malloc(sizeof(*start));
    if (!start) return ENOMEM;
    start->body = body;
    start->context = context;
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int result = pthread_create(&thread, &attributes, thread_trampoline, start);
    pthread_attr_destroy(&attributes);
    if (result != 0) free(start);
    return result;
}

uint64_t cxpmem_volatile_load64(const void *address) { return *(const volatile uint64_t *)address; }
void cxpmem_volatile_store64(void *address, uint64_t value) { *(volatile uint64_t *)address = value; }

uint64_t cxpmem_monotonic_nanoseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

// CPU affinity of the calling thread (sched_{get,set}affinity are GNU-only), as a raw cpu_set_t.
#include <sched.h>
int cxpmem_get_thread_affinity(void *set, size_t size) { return sched_getaffinity(0, size, (cpu_set_t *)set); }
int cxpmem_set_thread_affinity(const void *set, size_t size) { return sched_setaffinity(0, size, (const cpu_set_t *)set); }

int cxpmem_current_cpu(void) { return sched_getcpu(); }

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
int cxpmem_populate_read(void *address, size_t length) { return madvise(address, length, MADV_POPULATE_READ); }

#if defined(__x86_64__)
#include <emmintrin.h>
#endif
// SSE2 streaming stores (every x86-64 has them; AVX2 ones measured no faster here): 64 bytes, one
// cache line, per step, from a line-aligned destination; the unaligned head and tail go through
// memcpy. The fence orders the streamed lines before whatever the caller publishes next.
void cxpmem_copy_streaming(void *destination, const void *source, size_t length) {
#if defined(__x86_64__)
    unsigned char *to = destination;
    const unsigned char *from = source;
    size_t head = (64 - ((uintptr_t)to & 63)) & 63;
    if (head > length) head = length;
    memcpy(to, from, head);
    to += head;
    from += head;
    length -= head;
    size_t lines = length / 64;
    for (size_t line = 0; line < lines; line++, to += 64, from += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)from);
        __m128i b = _mm_loadu_si128((const __m128i *)(from + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(from + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(from + 48));
        _mm_stream_si128((__m128i *)to, a);
        _mm_stream_si128((__m128i *)(to + 16), b);
        _mm_stream_si128((__m128i *)(to + 32), c);
        _mm_stream_si128((__m128i *)(to + 48), d);
    }
    _mm_sfence();
    memcpy(to, from, length % 64);
#else
    memcpy(destination, source, length);
#endif
}
