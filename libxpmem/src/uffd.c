#include "uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

int uffd_open(uint64_t features)
{
    int descriptor = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (descriptor < 0 && errno == EPERM)
        descriptor = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (descriptor < 0)
        return -1;
    struct uffdio_api api = {.api = UFFD_API, .features = features};
    if (ioctl(descriptor, UFFDIO_API, &api) < 0 || (api.features & features) != features) {
        int saved = errno != 0 ? errno : EOPNOTSUPP;
        close(descriptor);
        errno = saved;
        return -1;
    }
    return descriptor;
}

int uffd_register(int descriptor, uint64_t start, uint64_t length, uint64_t mode)
{
    struct uffdio_register request = {.range = {.start = start, .len = length}, .mode = mode};
    return ioctl(descriptor, UFFDIO_REGISTER, &request);
}

int uffd_unregister(int descriptor, uint64_t start, uint64_t length)
{
    struct uffdio_range range = {.start = start, .len = length};
    return ioctl(descriptor, UFFDIO_UNREGISTER, &range);
}

int uffd_wake(int descriptor, uint64_t start, uint64_t length)
{
    struct uffdio_range range = {.start = start, .len = length};
    return ioctl(descriptor, UFFDIO_WAKE, &range);
}
