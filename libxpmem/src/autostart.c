#include "autostart.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "debug_log.h"
#include "socket_path.h"
#include "xpmem.h"

bool autostart_allowed(void)
{
    const char *value = getenv("XPMEM_AUTOSTART");
    return value == NULL || strcmp(value, "0") != 0;
}

static bool is_executable(const char *path) { return access(path, X_OK) == 0; }

/* The broker beside our install: PREFIX/lib[/multiarch]/libxpmem.so.0 -> PREFIX/bin/xpmemd. */
static bool find_beside_library(char *found, size_t capacity)
{
    Dl_info info;
    if (dladdr((void *)&xpmem_init, &info) == 0 || info.dli_fname == NULL)
        return false;
    char library[PATH_MAX];
    if (realpath(info.dli_fname, library) == NULL)
        return false;
    char *slash = strrchr(library, '/');
    for (int level = 0; level < 3 && slash != NULL; level++) {
        *slash = '\0'; /* library now names the directory `level` steps up */
        int length = snprintf(found, capacity, "%s/bin/xpmemd", library);
        if (length > 0 && (size_t)length < capacity && is_executable(found))
            return true;
        slash = strrchr(library, '/');
    }
    return false;
}

static bool find_on_path(char *found, size_t capacity)
{
    const char *path = getenv("PATH");
    if (path == NULL)
        return false;
    while (*path != '\0') {
        const char *end = strchrnul(path, ':');
        int length = snprintf(found, capacity, "%.*s/xpmemd", (int)(end - path), path);
        if (end != path && length > 0 && (size_t)length < capacity && is_executable(found))
            return true;
        path = *end == ':' ? end + 1 : end;
    }
    return false;
}

static bool find_broker(char *found, size_t capacity)
{
    const char *chosen = getenv("XPMEM_BROKER");
    if (chosen != NULL && chosen[0] != '\0') {
        snprintf(found, capacity, "%s", chosen);
        return is_executable(found);
    }
    return find_beside_library(found, capacity) || find_on_path(found, capacity);
}

/* The default socket's directory must be ours and private; xpmemd makes it when started without
 * --socket, but the log goes there before it runs. A directory someone else made is refused. */
static int ensure_private_directory(const char *directory)
{
    if (mkdir(directory, 0700) < 0 && errno != EEXIST)
        return -1;
    struct stat status;
    if (lstat(directory, &status) < 0)
        return -1;
    if (!S_ISDIR(status.st_mode) || status.st_uid != getuid() || (status.st_mode & 077) != 0) {
        debug_log("%s is not a private directory of this user; not starting a broker there", directory);
        errno = EACCES;
        return -1;
    }
    return 0;
}

/* Runs in the grandchild, after fork: only async-signal-safe calls until exec. */
static void become_broker(const char *broker, const char *socket_path, const char *log_path)
{
    int null_fd = open("/dev/null", O_RDWR);
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (null_fd >= 0) {
        dup2(null_fd, STDIN_FILENO);
        dup2(null_fd, STDOUT_FILENO);
    }
    dup2(log_fd >= 0 ? log_fd : null_fd, STDERR_FILENO);
    /* No descriptor of the application (sockets, pipes to mpirun) may live on in the daemon. */
    syscall(SYS_close_range, 3, ~0U, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    char *const arguments[] = {(char *)broker, (char *)"--socket", (char *)socket_path, NULL};
    execv(broker, arguments);
    _exit(127);
}

int autostart_broker(const char *socket_path)
{
    char broker[PATH_MAX];
    if (!find_broker(broker, sizeof broker)) {
        debug_log("no xpmemd to start: set XPMEM_BROKER, install it as PREFIX/bin/xpmemd beside PREFIX/lib, or put it on PATH");
        errno = ENOENT;
        return -1;
    }
    char directory[PATH_MAX];
    snprintf(directory, sizeof directory, "%s", socket_path);
    char *slash = strrchr(directory, '/');
    if (slash == NULL)
        snprintf(directory, sizeof directory, ".");
    else if (slash == directory)
        slash[1] = '\0';
    else
        *slash = '\0';
    if (!socket_path_is_explicit() && ensure_private_directory(directory) < 0)
        return -1;
    char log_path[PATH_MAX + 16];
    snprintf(log_path, sizeof log_path, "%s/xpmemd.log", directory);
    debug_log("starting %s --socket %s (log: %s)", broker, socket_path, log_path);

    /* Double fork: the broker is nobody's child (no zombie, no SIGCHLD for the application) and
     * leads its own session, so the job's terminal and process group signals do not reach it.
     * _Fork, not fork: the children only exec, so the atfork handlers (ours would copy every backed
     * page into the child, with the caller waiting) have nothing to do. */
    pid_t child = _Fork();
    if (child < 0)
        return -1;
    if (child == 0) {
        setsid();
        pid_t grandchild = _Fork();
        if (grandchild == 0)
            become_broker(broker, socket_path, log_path);
        _exit(grandchild < 0 ? 1 : 0);
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    return 0;
}
