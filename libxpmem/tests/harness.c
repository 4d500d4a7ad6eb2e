#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "wire.h"

double now_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

void pattern_fill(volatile uint8_t *bytes, size_t length, unsigned seed)
{
    for (size_t index = 0; index < length; index++)
        bytes[index] = pattern_byte(index, seed);
}

long pattern_check(const volatile uint8_t *bytes, size_t length, unsigned seed)
{
    for (size_t index = 0; index < length; index++)
        if (bytes[index] != pattern_byte(index, seed))
            return (long)index;
    return -1;
}

static int connect_to(const char *path)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    snprintf(address.sun_path, sizeof address.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int exchange(int fd, const uint8_t *request, size_t length, uint8_t *reply, size_t capacity,
                    struct wire_message *message)
{
    if (send(fd, request, length, MSG_NOSIGNAL) != (ssize_t)length)
        return -1;
    ssize_t got = recv(fd, reply, capacity, 0);
    if (got <= 0 || wire_decode(reply, (size_t)got, message) < 0)
        return -1;
    return 0;
}

int broker_query_status(const char *socket, struct broker_status *status)
{
    int fd = connect_to(socket);
    if (fd < 0)
        return -1;
    uint8_t request[512], reply[4096];
    struct wire_message message;
    size_t length = wire_encode_hello(request, sizeof request, 1, "libxpmem-tests status");
    int result = -1;
    if (exchange(fd, request, length, reply, sizeof reply, &message) == 0 && message.header.type == WIRE_WELCOME) {
        length = wire_encode_query_status(request, sizeof request, 2);
        if (exchange(fd, request, length, reply, sizeof reply, &message) == 0 && message.header.type == WIRE_STATUS) {
            status->pid = message.as.status.pid;
            status->clients = message.as.status.clients;
            status->segments = message.as.status.segments;
            status->grants = message.as.status.grants;
            status->attachments = message.as.status.attachments;
            status->open_descriptors = message.as.status.open_descriptors;
            result = 0;
        }
    }
    close(fd);
    return result;
}

int broker_start(struct broker *broker, const char *xpmemd)
{
    snprintf(broker->directory, sizeof broker->directory, "/tmp/libxpmem-tests-XXXXXX");
    if (mkdtemp(broker->directory) == NULL)
        return -1;
    snprintf(broker->socket, sizeof broker->socket, "%s/xpmemd.sock", broker->directory);
    return broker_restart(broker, xpmemd);
}

int broker_restart(struct broker *broker, const char *xpmemd)
{
    char log_path[400];
    snprintf(log_path, sizeof log_path, "%s/xpmemd.log", broker->directory);
    broker->pid = fork();
    if (broker->pid < 0)
        return -1;
    if (broker->pid == 0) {
        FILE *log = freopen(log_path, "a", stderr);
        (void)log;
        /* Not the runner's pipes to its children: the broker must not hold their ends open. */
        close_range(3, ~0U, 0);
        execl(xpmemd, xpmemd, "--socket", broker->socket, (char *)NULL);
        _exit(127);
    }
    for (int attempt = 0; attempt < 1000; attempt++) {
        struct broker_status status;
        if (broker_query_status(broker->socket, &status) == 0)
            return 0;
        if (waitpid(broker->pid, NULL, WNOHANG) == broker->pid) {
            fprintf(stderr, "xpmemd exited at start; see %s\n", log_path);
            return -1;
        }
        usleep(10000);
    }
    return -1;
}

const char *broker_start_for_tests(struct broker *broker, const char *variable)
{
    const char *xpmemd = getenv(variable);
    if (xpmemd == NULL || xpmemd[0] == '\0' || access(xpmemd, X_OK) != 0) {
        fprintf(stderr, "no xpmemd to test with: set %s=path/to/xpmemd (swift build builds it)\n", variable);
        return NULL;
    }
    if (broker_start(broker, xpmemd) < 0) {
        fprintf(stderr, "%s did not start (see its log in %s)\n", xpmemd, broker->directory);
        return NULL;
    }
    setenv("XPMEM_SOCKET", broker->socket, 1);
    setenv("XPMEM_AUTOSTART", "0", 1);
    signal(SIGPIPE, SIG_IGN);
    return xpmemd;
}

void broker_stop(struct broker *broker)
{
    if (broker->pid > 0) {
        kill(broker->pid, SIGTERM);
        waitpid(broker->pid, NULL, 0);
        broker->pid = 0;
    }
    char command[600];
    snprintf(command, sizeof command, "rm -rf '%s'", broker->directory);
    if (system(command) != 0) {
        /* A leftover temporary directory is harmless. */
    }
}

int child_start(struct child *child, int (*body)(int in, int out, void *argument), void *argument)
{
    int to_child[2], from_child[2];
    if (pipe2(to_child, 0) < 0)
        return -1;
    if (pipe2(from_child, 0) < 0)
        return -1;
    fflush(stdout);
    child->pid = fork();
    if (child->pid < 0)
        return -1;
    if (child->pid == 0) {
        close(to_child[1]);
        close(from_child[0]);
        /* Die with the runner instead of lingering if it is killed. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int result = body(to_child[0], from_child[1], argument);
        _exit(result);
    }
    close(to_child[0]);
    close(from_child[1]);
    child->to_child = to_child[1];
    child->from_child = from_child[0];
    return 0;
}

static void write_all(int fd, const char *text, size_t length)
{
    while (length > 0) {
        ssize_t written = write(fd, text, length);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return;
        text += written;
        length -= (size_t)written;
    }
}

int child_send(struct child *child, const char *format, ...)
{
    char line[4096];
    va_list arguments;
    va_start(arguments, format);
    int length = vsnprintf(line, sizeof line - 1, format, arguments);
    va_end(arguments);
    line[length++] = '\n';
    write_all(child->to_child, line, (size_t)length);
    return 0;
}

void say(int out, const char *format, ...)
{
    char line[4096];
    va_list arguments;
    va_start(arguments, format);
    int length = vsnprintf(line, sizeof line - 1, format, arguments);
    va_end(arguments);
    line[length++] = '\n';
    write_all(out, line, (size_t)length);
}

/* Reads byte by byte so that no line is consumed past its newline. */
static bool read_line(int fd, char *line, size_t capacity, int timeout_ms)
{
    size_t length = 0;
    double deadline = now_seconds() + timeout_ms / 1000.0;
    for (;;) {
        if (timeout_ms >= 0) {
            int left = (int)((deadline - now_seconds()) * 1000);
            struct pollfd waiting = {.fd = fd, .events = POLLIN};
            if (left < 0 || poll(&waiting, 1, left) <= 0)
                return false;
        }
        char c;
        ssize_t got = read(fd, &c, 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return false;
        if (c == '\n') {
            line[length] = '\0';
            return true;
        }
        if (length + 1 < capacity)
            line[length++] = c;
    }
}

bool child_read_line(struct child *child, char *line, size_t capacity, int timeout_ms)
{
    return read_line(child->from_child, line, capacity, timeout_ms);
}

bool hear(int in, char *line, size_t capacity) { return read_line(in, line, capacity, -1); }

int child_wait(struct child *child, int timeout_ms)
{
    double deadline = now_seconds() + timeout_ms / 1000.0;
    int status = 0;
    for (;;) {
        pid_t done = waitpid(child->pid, &status, WNOHANG);
        if (done == child->pid)
            break;
        if (done < 0 && errno != EINTR)
            return -1;
        if (now_seconds() > deadline) {
            child_kill(child);
            return -1;
        }
        usleep(2000);
    }
    close(child->to_child);
    close(child->from_child);
    child->pid = 0;
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

void child_kill(struct child *child)
{
    if (child->pid > 0) {
        kill(child->pid, SIGKILL);
        waitpid(child->pid, NULL, 0);
        close(child->to_child);
        close(child->from_child);
        child->pid = 0;
    }
}

static sigjmp_buf fault_return;
static volatile sig_atomic_t fault_signal;

static void on_fault(int signal_number)
{
    fault_signal = signal_number;
    siglongjmp(fault_return, 1);
}

int touch_and_catch(volatile uint8_t *address, bool write)
{
    struct sigaction action = {.sa_handler = on_fault}, previous_bus, previous_segv;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, &previous_bus);
    sigaction(SIGSEGV, &action, &previous_segv);
    fault_signal = 0;
    if (sigsetjmp(fault_return, 1) == 0) {
        if (write)
            *address = 0x5A;
        else
            (void)*address;
    }
    sigaction(SIGBUS, &previous_bus, NULL);
    sigaction(SIGSEGV, &previous_segv, NULL);
    return fault_signal;
}

bool write_file(const char *path, const char *text)
{
    int descriptor = open(path, O_WRONLY | O_CLOEXEC);
    if (descriptor < 0)
        return false;
    bool written = write(descriptor, text, strlen(text)) == (ssize_t)strlen(text);
    close(descriptor);
    return written;
}

static bool file_contains(const char *path, const char *word)
{
    char text[1024] = "";
    int descriptor = open(path, O_RDONLY | O_CLOEXEC);
    if (descriptor < 0)
        return false;
    ssize_t length = read(descriptor, text, sizeof text - 1);
    close(descriptor);
    text[length > 0 ? length : 0] = '\0';
    return strstr(text, word) != NULL;
}

bool memory_cgroup_make(struct memory_cgroup *cgroup, char *why, size_t capacity)
{
    /* One process may make several, one after another: each gets a name of its own. */
    static int made;
    made++;
    if (geteuid() != 0) {
        snprintf(why, capacity, "not root: creating a memory cgroup needs root");
        return false;
    }
    static const char *const v2_roots[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
    for (size_t index = 0; index < 2; index++) {
        char controllers[300];
        snprintf(controllers, sizeof controllers, "%s/cgroup.controllers", v2_roots[index]);
        if (!file_contains(controllers, "memory"))
            continue;
        char subtree[300];
        snprintf(subtree, sizeof subtree, "%s/cgroup.subtree_control", v2_roots[index]);
        write_file(subtree, "+memory");
        snprintf(cgroup->directory, sizeof cgroup->directory, "%s/xpmem-test-%d-%d", v2_roots[index], (int)getpid(),
                 made);
        if (mkdir(cgroup->directory, 0755) == 0) {
            snprintf(cgroup->limit_file, sizeof cgroup->limit_file, "%s/memory.high", cgroup->directory);
            cgroup->version_2 = true;
            if (access(cgroup->limit_file, W_OK) == 0)
                return true;
            rmdir(cgroup->directory);
        }
    }
    if (access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0) {
        snprintf(cgroup->directory, sizeof cgroup->directory, "/sys/fs/cgroup/memory/xpmem-test-%d-%d", (int)getpid(),
                 made);
        if (mkdir(cgroup->directory, 0755) == 0) {
            snprintf(cgroup->limit_file, sizeof cgroup->limit_file, "%s/memory.limit_in_bytes", cgroup->directory);
            cgroup->version_2 = false;
            return true;
        }
        snprintf(why, capacity, "cannot create %s: %s", cgroup->directory, strerror(errno));
        return false;
    }
    snprintf(why, capacity, "no cgroup v2 memory controller and no cgroup v1 memory hierarchy");
    return false;
}

bool memory_cgroup_set_limit(const struct memory_cgroup *cgroup, uint64_t bytes)
{
    char limit[32];
    snprintf(limit, sizeof limit, "%llu", (unsigned long long)bytes);
    return write_file(cgroup->limit_file, limit);
}

bool memory_cgroup_add(const struct memory_cgroup *cgroup, pid_t pid)
{
    char procs[400], text[32];
    snprintf(procs, sizeof procs, "%s/cgroup.procs", cgroup->directory);
    snprintf(text, sizeof text, "%d", (int)pid);
    return write_file(procs, text);
}

void memory_cgroup_remove(const struct memory_cgroup *cgroup)
{
    /* Its processes have exited; the kernel may take a moment to let go of the last one. */
    for (int attempt = 0; attempt < 200 && rmdir(cgroup->directory) != 0 && errno == EBUSY; attempt++)
        usleep(50 * 1000);
}

long long smaps_kib(const void *address, const char *field, unsigned long range[2])
{
    FILE *smaps = fopen("/proc/self/smaps", "r");
    if (smaps == NULL)
        return -1;
    char line[512];
    bool inside = false;
    long long found = -1;
    while (fgets(line, sizeof line, smaps) != NULL) {
        unsigned long start, end;
        char dash;
        if (sscanf(line, "%lx%c%lx ", &start, &dash, &end) == 3 && dash == '-') {
            inside = (uintptr_t)address >= start && (uintptr_t)address < end;
            if (inside && range != NULL) {
                range[0] = start;
                range[1] = end;
            }
            continue;
        }
        long long value;
        if (inside && strncmp(line, field, strlen(field)) == 0 && sscanf(line + strlen(field), "%lld", &value) == 1) {
            found = value;
            break;
        }
    }
    fclose(smaps);
    return found;
}

void thp_setting(const char *file, char *word, size_t capacity)
{
    char path[256], text[256] = "";
    snprintf(path, sizeof path, "/sys/kernel/mm/transparent_hugepage/%s", file);
    word[0] = '\0';
    FILE *setting = fopen(path, "r");
    if (setting == NULL)
        return;
    bool read_any = fgets(text, sizeof text, setting) != NULL;
    fclose(setting);
    char *open_bracket = read_any ? strchr(text, '[') : NULL;
    char *close_bracket = open_bracket != NULL ? strchr(open_bracket, ']') : NULL;
    if (close_bracket != NULL && (size_t)(close_bracket - open_bracket) <= capacity) {
        memcpy(word, open_bracket + 1, (size_t)(close_bracket - open_bracket - 1));
        word[close_bracket - open_bracket - 1] = '\0';
    }
}
