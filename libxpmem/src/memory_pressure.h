/* The kernel's memory pressure, without cost while there is none: a thread of the library's own
 * sleeps in poll(2) on a PSI trigger ("some" stall of 150 ms in any 1 s window; 300 ms in 2 s where
 * the kernel refuses shorter windows to unprivileged processes) on the process's cgroup v2
 * memory.pressure, or /proc/pressure/memory when that is not available. Each time the trigger fires
 * it calls back with the file's "some avg10" (0 to 100: the share of the last ten seconds in which
 * some task stalled on memory), so that the caller can give back in proportion. With no PSI (kernel
 * without CONFIG_PSI, or psi=0) nothing watches, and XPMEM_DEBUG=1 says so. */
#ifndef XPMEM_MEMORY_PRESSURE_H
#define XPMEM_MEMORY_PRESSURE_H

/* Starts the watch once per process (later calls do nothing). */
void memory_pressure_watch(void (*on_pressure)(double some_avg10));

enum memory_pressure_state {
    MEMORY_PRESSURE_NOT_STARTED = 0,
    MEMORY_PRESSURE_WATCHING = 1,
    MEMORY_PRESSURE_UNAVAILABLE = -1, /* no PSI file took a trigger, or the watch ended */
};
enum memory_pressure_state memory_pressure_state(void);
/* How many times the trigger fired. */
unsigned long long memory_pressure_events(void);

/* In a fork child: the parent's thread is not here; a watch starts again when the child needs one. */
void memory_pressure_reset_after_fork(void);

#endif
