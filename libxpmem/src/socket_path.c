#include "socket_path.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/un.h>
#include <unistd.h>

bool socket_path_is_explicit(void)
{
    const char *explicit_path = getenv("XPMEM_SOCKET");
    return explicit_path != NULL && explicit_path[0] != '\0';
}

void socket_path_default_directory(char *directory, size_t capacity)
{
    const char *runtime = getenv("XDG_RUNTIME_DIR");
    if (runtime != NULL && runtime[0] != '\0')
        snprintf(directory, capacity, "%s/xpmem", runtime);
    else
        snprintf(directory, capacity, "/tmp/xpmem-%u", (unsigned)getuid());
}

int socket_path_resolve(char *path, size_t capacity)
{
    int length;
    if (socket_path_is_explicit()) {
        length = snprintf(path, capacity, "%s", getenv("XPMEM_SOCKET"));
    } else {
        char directory[512];
        socket_path_default_directory(directory, sizeof directory);
        length = snprintf(path, capacity, "%s/xpmemd.sock", directory);
    }
    if (length < 0 || (size_t)length >= capacity || (size_t)length >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}
