/* What the C tests and the benchmark share: a private broker on a socket in a temporary
 * directory, child processes forked before any library use and driven by text lines over pipes,
 * and status requests straight to the broker. */
#ifndef XPMEM_TEST_HARNESS_H
#define XPMEM_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct broker {
    pid_t pid;
    char directory[256];
    char socket[320];
};

/* Starts `xpmemd --socket DIR/xpmemd.sock` and waits until it answers. */
int broker_start(struct broker *broker, const char *xpmemd);
/* Starts xpmemd again on the same socket (after the last one died) and waits until it answers. */
int broker_restart(struct broker *broker, const char *xpmemd);
void broker_stop(struct broker *broker);
/* What every test program does first: starts `xpmemd` (the path in environment variable `variable`)
 * and points the library at it alone (XPMEM_SOCKET, XPMEM_AUTOSTART=0, SIGPIPE ignored). Returns
 * the xpmemd path, or NULL after printing why to stderr. */
const char *broker_start_for_tests(struct broker *broker, const char *variable);

struct broker_status {
    int32_t pid;
    uint32_t clients, segments, grants, attachments, open_descriptors;
};
/* Connects, says hello, asks queryStatus. */
int broker_query_status(const char *socket, struct broker_status *status);

struct child {
    pid_t pid;
    int to_child;   /* the runner writes commands here */
    int from_child; /* and reads the child's lines here */
};

/* Forks a child that runs body(in, out, argument) and exits with its result. */
int child_start(struct child *child, int (*body)(int in, int out, void *argument), void *argument);
int child_send(struct child *child, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Reads one line (without the newline); false on end of stream or after timeout_ms. */
bool child_read_line(struct child *child, char *line, size_t capacity, int timeout_ms);
/* Waits for the child; returns its exit status, 128+signal when killed by one, -1 after timeout_ms
 * (the child is then killed). */
int child_wait(struct child *child, int timeout_ms);
void child_kill(struct child *child);

/* In a child: a line to the runner, and a line from it. */
void say(int out, const char *format, ...) __attribute__((format(printf, 2, 3)));
bool hear(int in, char *line, size_t capacity);

/* Deterministic contents: byte i of a buffer filled with `seed`. */
static inline uint8_t pattern_byte(uint64_t index, unsigned seed)
{
    uint64_t mixed = (index + 1) * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)seed * 0xBF58476D1CE4E5B9ULL);
    return (uint8_t)(mixed >> 56) ^ (uint8_t)seed;
}
void pattern_fill(volatile uint8_t *bytes, size_t length, unsigned seed);
/* Index of the first wrong byte, or -1. */
long pattern_check(const volatile uint8_t *bytes, size_t length, unsigned seed);

double now_seconds(void);

/* A memory cgroup of a test's own: v2 with the memory controller where the machine offers it (its
 * limit is memory.high: reclaim and stalls, never the OOM killer), else v1 (memory.limit_in_bytes). */
struct memory_cgroup {
    char directory[256];
    char limit_file[320];
    bool version_2;
};
/* Makes one; false with `why` set when there is none to make (not root, no cgroup). */
bool memory_cgroup_make(struct memory_cgroup *cgroup, char *why, size_t capacity);
bool memory_cgroup_set_limit(const struct memory_cgroup *cgroup, uint64_t bytes);
/* Moves process `pid` into it. */
bool memory_cgroup_add(const struct memory_cgroup *cgroup, pid_t pid);
/* Removes it once its processes have exited. */
void memory_cgroup_remove(const struct memory_cgroup *cgroup);
/* Writes `text` into an existing file (a cgroup or sysctl knob). */
bool write_file(const char *path, const char *text);

/* Reads (or writes 0x5A to) `address` and returns the signal that raised, SIGBUS or SIGSEGV, or 0. */
int touch_and_catch(volatile uint8_t *address, bool write);

/* The kB figure `field` ("AnonHugePages:", "ShmemPmdMapped:", "Rss:") of this process's mapping
 * holding `address` in /proc/self/smaps; -1 when there is none. With `range`, also that mapping's
 * start and end. */
long long smaps_kib(const void *address, const char *field, unsigned long range[2]);

/* The selected word of a setting file under /sys/kernel/mm/transparent_hugepage/ (`file` such as
 * "shmem_enabled"): "never" for "always [never]", "" when unreadable. */
void thp_setting(const char *file, char *word, size_t capacity);

#endif
