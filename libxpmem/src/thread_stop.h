/* Stopping every other thread of the process while backing copies memory, so that no write made
 * between the copy and the remap is lost.
 *
 * Each other task gets a real-time signal (SIGRTMAX-4 unless XPMEM_STOP_SIGNAL names another, or
 * that one already has a handler: then the next lower free one; glibc keeps SIGRTMIN-2 and
 * SIGRTMIN-1, i.e. 32 and 33, for itself and we never go below SIGRTMIN+4). Its handler, installed
 * SA_RESTART with every signal blocked, records the arrival and sleeps on a futex until released;
 * interrupted system calls restart, except those the kernel never restarts after a handler
 * (nanosleep, poll, epoll_wait, ...: they return EINTR, as with any signal). This happens only
 * when an attach needs memory copied, not on attaches of ranges already backed. Threads that block the signal cannot be stopped and are left
 * running (they must not write the range being backed); threads stuck longer than 5 s make the
 * backing fail with EBUSY rather than hang. */
#ifndef XPMEM_THREAD_STOP_H
#define XPMEM_THREAD_STOP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "private_area.h"

struct thread_stop_control {
    _Atomic uint32_t generation; /* bumped by each stop */
    _Atomic uint32_t released;   /* the last stop released (its threads and earlier ones may go); futex word */
    _Atomic uint32_t arrivals;   /* bumped by every handler run; futex word the stopper waits on */
    _Atomic uint32_t in_handler; /* threads inside the handler: parked, or released and not yet gone */
    _Atomic uint32_t count;      /* entries of tids/arrived in use */
    _Atomic pid_t exempt[2];     /* the library's own threads, never stopped (THREAD_STOP_*) */
    pid_t tids[MAX_STOPPED_THREADS];
    _Atomic uint32_t arrived[MAX_STOPPED_THREADS]; /* generation the thread arrived in */
};

/* The library's threads, which run on the private area, write nothing a stop protects, and block
 * every signal: each records itself once so that stops skip it instead of waiting for it. */
enum { THREAD_STOP_EVENT_THREAD = 0, THREAD_STOP_WATCH_THREAD = 1 };
void thread_stop_exempt_self(int slot);
/* Starts such a thread (`body` must call thread_stop_exempt_self(slot) first) with every signal
 * blocked, and returns only once it has recorded itself; pthread_create's result. */
int thread_stop_start_exempt(int slot, pthread_t *thread, const pthread_attr_t *attributes, void *(*body)(void *),
                             void *argument);
/* Starts a detached library thread named `name` that must stop with the application's (its stack, or
 * what it allocates, may lie in exported memory): born with every signal blocked but the stop
 * signal, SIGBUS and SIGSEGV, so that the application's signals go to its own threads and no stop
 * ever finds it blocking the signal. pthread_create's result. */
int thread_stop_start_stoppable(const char *name, void *(*body)(void *), void *argument);
/* In a fork child: no library thread and no pending watch event. */
void thread_stop_reset_after_fork(void);

/* Installs the handler once; returns the signal used, or -1 with errno. */
int thread_stop_prepare(struct private_area *area);
/* Stops every other thread; returns 0 when all are parked (or cannot be), -1 with errno EBUSY
 * (all released again) when some did not arrive in time, or when a thread released by the last stop
 * has not left the handler within 5 s (a new stop waits for that: see thread_stop.c). */
int thread_stop_all(struct private_area *area);
void thread_stop_release(struct private_area *area);
/* How many threads the last stop parked and how many it had to leave running. */
void thread_stop_last_counts(unsigned *parked, unsigned *left_running);

#endif
