#include "address_space_file.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "debug_log.h"
#include "pages.h"

static pthread_mutex_t file_lock = PTHREAD_MUTEX_INITIALIZER;
static struct address_space_file current = {.descriptor = -1};

int address_space_file_open(struct address_space_file *file)
{
    pthread_mutex_lock(&file_lock);
    if (current.descriptor < 0) {
        int fd = memfd_create("xpmem-address-space", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        struct stat status;
        /* A memfd starts 0777; the broker refuses a file other users could reopen read-write. */
        if (fd < 0 || fchmod(fd, 0600) < 0 || ftruncate(fd, (off_t)ADDRESS_SPACE_LIMIT) < 0
            || fstat(fd, &status) < 0) {
            int saved = errno;
            debug_log("cannot make the address-space file: %s", strerror(saved));
            if (fd >= 0)
                close(fd);
            pthread_mutex_unlock(&file_lock);
            errno = saved;
            return -1;
        }
        current.device = status.st_dev;
        current.inode = status.st_ino;
        __atomic_store_n(&current.descriptor, fd, __ATOMIC_RELEASE);
    }
    *file = current;
    pthread_mutex_unlock(&file_lock);
    return 0;
}

struct address_space_file address_space_file_current(void)
{
    struct address_space_file file;
    file.descriptor = __atomic_load_n(&current.descriptor, __ATOMIC_ACQUIRE);
    file.device = current.device;
    file.inode = current.inode;
    return file;
}

void address_space_file_forget(void)
{
    pthread_mutex_init(&file_lock, NULL);
    if (current.descriptor >= 0)
        close(current.descriptor);
    current.descriptor = -1;
}

void address_space_file_discard(void)
{
    pthread_mutex_lock(&file_lock);
    int descriptor = __atomic_exchange_n(&current.descriptor, -1, __ATOMIC_ACQ_REL);
    if (descriptor >= 0)
        close(descriptor);
    pthread_mutex_unlock(&file_lock);
}
