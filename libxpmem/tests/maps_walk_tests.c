/* Unit tests of the mapping walk (maps_walk.h), no broker: the kernel's PROCMAP_QUERY answers and the
 * text of /proc/self/maps must list the same mappings, fields and names alike, from any address;
 * and a walk resumes at the end of the entry it gave, whatever the caller changed inside it. */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "maps_walk.h"
#include "test_report.h"

#define PAGE 4096UL
#define MAX_ENTRIES 4096
/* The vsyscall page is listed in the text only (it is no mapping of the process's own); nothing
 * at or above the top of the user address space is compared. */
#define USER_TOP (UINT64_C(1) << 47)

struct listed {
    struct maps_entry entry;
    char path[256];
};

static struct listed query_list[MAX_ENTRIES], text_list[MAX_ENTRIES];

/* Copies every entry of the walk below USER_TOP; the count, or -1 if the walk failed. */
static int list_all(struct maps_walk *walk, struct listed *list)
{
    int count = 0;
    struct maps_entry entry;
    while (count < MAX_ENTRIES && maps_walk_next(walk, &entry) && entry.start < USER_TOP) {
        list[count].entry = entry;
        size_t length = entry.path_length < sizeof list[count].path - 1 ? entry.path_length : sizeof list[count].path - 1;
        memcpy(list[count].path, entry.path, length);
        list[count].path[length] = '\0';
        list[count].entry.path = NULL;
        count++;
    }
    int error = walk->error;
    maps_walk_finish(walk);
    return error == 0 ? count : -1;
}

static bool same_entry(const struct listed *a, const struct listed *b)
{
    return a->entry.start == b->entry.start && a->entry.end == b->entry.end && a->entry.readable == b->entry.readable
           && a->entry.writable == b->entry.writable && a->entry.executable == b->entry.executable
           && a->entry.shared == b->entry.shared && a->entry.offset == b->entry.offset
           && a->entry.device_major == b->entry.device_major && a->entry.device_minor == b->entry.device_minor
           && a->entry.inode == b->entry.inode && strcmp(a->path, b->path) == 0;
}

static void describe(char *text, size_t size, const struct listed *item)
{
    snprintf(text, size, "%llx-%llx %c%c%c%c %llx %x:%x %llu '%s'", (unsigned long long)item->entry.start,
             (unsigned long long)item->entry.end, item->entry.readable ? 'r' : '-', item->entry.writable ? 'w' : '-',
             item->entry.executable ? 'x' : '-', item->entry.shared ? 's' : 'p', (unsigned long long)item->entry.offset,
             item->entry.device_major, item->entry.device_minor, (unsigned long long)item->entry.inode, item->path);
}

/* Both walks from `from`, compared entry by entry: how many entries they agree on, or -1 with the
 * first difference in `why`. */
static int compared_walks(struct private_area *area, uint64_t from, char *why, size_t size)
{
    struct maps_walk walk;
    if (!maps_walk_start(&walk, area, from)) {
        snprintf(why, size, "the walk did not start: %s", strerror(errno));
        return -1;
    }
    int queried = list_all(&walk, query_list);
    if (!maps_walk_start_text(&walk, area, from)) {
        snprintf(why, size, "the text walk did not start: %s", strerror(errno));
        return -1;
    }
    int read = list_all(&walk, text_list);
    if (queried < 0 || read < 0 || queried != read) {
        snprintf(why, size, "%d entries queried, %d read from the text", queried, read);
        return -1;
    }
    for (int index = 0; index < queried; index++) {
        if (!same_entry(&query_list[index], &text_list[index])) {
            char one[400], other[400];
            describe(one, sizeof one, &query_list[index]);
            describe(other, sizeof other, &text_list[index]);
            snprintf(why, size, "entry %d: queried %s, text %s", index, one, other);
            return -1;
        }
    }
    return queried;
}

/* Both walks from `from` agree; `inside` when a mapping covers `from`. */
static void compare_walks(const char *name, struct private_area *area, uint64_t from, bool inside)
{
    char why[1000];
    int count = compared_walks(area, from, why, sizeof why);
    if (count < 0) {
        report(name, false, "%s", why);
        return;
    }
    bool first_covers = count > 0 && query_list[0].entry.start <= from && query_list[0].entry.end > from;
    report(name, count > 0 && first_covers == inside, "%d entries, the first %llx-%llx", count,
           count > 0 ? (unsigned long long)query_list[0].entry.start : 0ULL,
           count > 0 ? (unsigned long long)query_list[0].entry.end : 0ULL);
}

/* In a child whose seccomp filter fails the query with EPERM, as a sandbox's ioctl rules may: the
 * walk must fall back to the text and list what the text lists. Exits 0 if it did, 2 if no filter
 * could be installed, 1 otherwise. */
#if defined(__x86_64__)
#define THIS_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define THIS_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif
#define QUERY_REQUEST ((uint32_t)_IOWR('f', 17, struct { char bytes[104]; }))

static int walk_with_the_query_refused(struct private_area *area)
{
#ifdef THIS_AUDIT_ARCH
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, THIS_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])), /* its low half */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, QUERY_REQUEST, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0)
        return 2;
    char why[1000];
    return compared_walks(area, 0, why, sizeof why) > 0 ? 0 : 1;
#else
    (void)area;
    return 2;
#endif
}

/* Whether the main thread (the thread-group leader) has exited: a zombie in its task's stat. */
static bool main_thread_exited(void)
{
    char path[64], text[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)getpid());
    int descriptor = open(path, O_RDONLY | O_CLOEXEC);
    if (descriptor < 0)
        return true;
    ssize_t length = read(descriptor, text, sizeof text - 1);
    close(descriptor);
    if (length <= 0)
        return true;
    text[length] = '\0';
    const char *after_name = strrchr(text, ')');
    return after_name != NULL && (after_name[2] == 'Z' || after_name[2] == 'X');
}

/* An MPI runtime's progress thread may outlive main's: /proc/self/maps of such a process reads
 * empty, and a walk of it would back nothing. */
static void *after_main_thread_exits(void *argument)
{
    struct private_area *area = argument;
    for (int waited = 0; !main_thread_exited() && waited < 10000; waited++)
        usleep(1000);
    if (!main_thread_exited()) {
        report("after the main thread exits, the walks still list every mapping", false,
               "the main thread did not exit within 10 s");
    } else {
        int stack_variable = 0;
        compare_walks("after the main thread exits, the walks still list every mapping (this thread's stack among them)",
                      area, (uint64_t)(uintptr_t)&stack_variable, true);
    }
    exit(report_totals());
}

/* From uname: Linux 6.11 added PROCMAP_QUERY. */
static bool kernel_has_procmap_query(void)
{
    struct utsname name;
    unsigned major = 0, minor = 0;
    if (uname(&name) != 0 || sscanf(name.release, "%u.%u", &major, &minor) != 2)
        return false;
    return major > 6 || (major == 6 && minor >= 11);
}

int main(void)
{
    struct private_area *area = private_area_get();
    if (area == NULL)
        return report_setup_failure("the private area could not be mapped");

    /* Mappings of every kind the backing meets: anonymous memory split by protection, a shared
     * memfd (named like the library's own files), a private file mapping at an offset, the heap. */
    uint8_t *anonymous = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(anonymous + 4 * PAGE, 4 * PAGE, PROT_READ);
    mprotect(anonymous + 12 * PAGE, 2 * PAGE, PROT_NONE);
    int memfd = memfd_create("xpmem-walk-test", MFD_CLOEXEC);
    void *shared = MAP_FAILED, *file_mapping = MAP_FAILED;
    if (memfd >= 0 && ftruncate(memfd, 8 * PAGE) == 0)
        shared = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    int file = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (file >= 0)
        file_mapping = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, file, PAGE);
    void *heap = malloc(1 << 16);
    if (anonymous == MAP_FAILED || shared == MAP_FAILED || file_mapping == MAP_FAILED || heap == NULL)
        return report_setup_failure("the test's mappings could not be made");

    /* Whether the walk queries: it falls back to the text for good once a query is refused. */
    struct maps_walk probe;
    struct maps_entry first_entry;
    bool queries = maps_walk_start(&probe, area, 0) && maps_walk_next(&probe, &first_entry) && probe.descriptor >= 0;
    maps_walk_finish(&probe);
    if (kernel_has_procmap_query())
        report("on Linux 6.11 or later, the walk asks PROCMAP_QUERY (no fallback to the text)", queries,
               "the kernel refused the query: is the ioctl's number or layout wrong?");
    else
        printf("skip PROCMAP_QUERY: this kernel predates it (Linux 6.11); both walks read the text\n");

    compare_walks("from address 0, the queried walk lists what the text lists, names and all", area, 0, false);
    compare_walks("from inside a mapping, both walks start with the mapping that covers the address", area,
                  (uint64_t)(uintptr_t)(anonymous + 5 * PAGE) + 123, true);
    compare_walks("from a heap address, both walks agree", area, (uint64_t)(uintptr_t)heap, true);

    /* Changes inside the entry just given are not given again: the walk resumes at its end. */
    struct maps_walk walk;
    struct maps_entry entry;
    uint64_t base = (uint64_t)(uintptr_t)anonymous;
    bool started = maps_walk_start(&walk, area, base);
    bool first = started && maps_walk_next(&walk, &entry) && entry.start == base && entry.end == base + 4 * PAGE;
    mprotect(anonymous + PAGE, PAGE, PROT_READ); /* splits the entry it gave */
    bool second = first && maps_walk_next(&walk, &entry);
    report("a walk resumes at the end of the entry it gave, after the caller split that entry",
           second && entry.start == base + 4 * PAGE && entry.end == base + 8 * PAGE,
           "started %d, first %d, then %llx-%llx", started, first, (unsigned long long)entry.start,
           (unsigned long long)entry.end);
    maps_walk_finish(&walk);
    mprotect(anonymous + PAGE, PAGE, PROT_READ | PROT_WRITE);

    /* A mapping that grew across the walk's position (merged with the next) comes back from below it. */
    if (queries) {
        started = maps_walk_start(&walk, area, base);
        first = started && maps_walk_next(&walk, &entry) && entry.end == base + 4 * PAGE;
        mprotect(anonymous + 4 * PAGE, 4 * PAGE, PROT_READ | PROT_WRITE); /* [0, 12) pages now one mapping */
        second = first && maps_walk_next(&walk, &entry);
        report("a mapping merged across the walk's position since comes back, starting below it",
               second && entry.start == base && entry.end == base + 12 * PAGE, "started %d, first %d, then %llx-%llx",
               started, first, (unsigned long long)entry.start, (unsigned long long)entry.end);
        maps_walk_finish(&walk);
    }

    /* Past the last mapping the walk ends without an error. */
    bool ended = maps_walk_start(&walk, area, USER_TOP) && !maps_walk_next(&walk, &entry) && walk.error == 0;
    maps_walk_finish(&walk);
    if (queries)
        report("above every mapping, the walk ends with no error", ended, "error %d", walk.error);

    fflush(stdout);
    pid_t child = fork();
    if (child == 0)
        _exit(walk_with_the_query_refused(area));
    int status = 0;
    bool waited = child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status);
    const char *refused_name = "where a sandbox refuses the query (EPERM), the walk falls back to the text and lists the same";
    if (waited && WEXITSTATUS(status) == 2)
        printf("skip %s: no seccomp filter could be installed here\n", refused_name);
    else
        report(refused_name, waited && WEXITSTATUS(status) == 0, "child exit status %d", waited ? WEXITSTATUS(status) : -1);

    free(heap);
    /* The last checks run on another thread once this one has exited. */
    pthread_t survivor;
    if (pthread_create(&survivor, NULL, after_main_thread_exits, area) != 0)
        return report_setup_failure("no thread for the checks after the main thread exits");
    pthread_exit(NULL);
}
