/* The thread of the library's own that serves the broker's events on the subscription socket:
 * backRange (back memory for an importer, answer rangeBacked), invalidateBegin (acknowledge),
 * released. It runs on a stack in the private area, with every signal blocked. */
#ifndef XPMEM_EVENT_THREAD_H
#define XPMEM_EVENT_THREAD_H

#include <pthread.h>

/* Starts serving `socket`; the caller closes it after joining the thread. */
int event_thread_start(int socket, pthread_t *thread);

#endif
