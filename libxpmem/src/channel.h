/* The main connection to the broker: one request at a time, each answered by one reply with the
 * same request id. Serialising requests with a mutex is what keeps replies matched to callers. */
#ifndef XPMEM_CHANNEL_H
#define XPMEM_CHANNEL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "wire.h"

struct channel {
    pthread_mutex_t lock;
    int socket;
    uint32_t next_request_id;
    /* Set when the broker closed the connection or broke the protocol; the session reconnects. */
    bool broken;
    /* Bumped by every connection: the broker ids (permit handles, attachment ids) of one connection
     * mean nothing, or something else, on the next. */
    uint64_t generation;
};

/* A reply buffer large enough for every reply but listings and attach windows. */
#define CHANNEL_SMALL_REPLY 2048

/* Connects a SOCK_SEQPACKET socket to `path`; -1 with errno (ENOENT, ECONNREFUSED...) on failure. */
int channel_connect(struct channel *channel, const char *path);
void channel_close(struct channel *channel);

/* Sends `request` (its request id is filled in here) with `descriptor_count` descriptors, and
 * waits for its reply in `reply_buffer`. A failure reply becomes -1 with errno mapped from its code;
 * a reply of another type than `expected_type` (0: any) is EPROTO. When `received_descriptor` is
 * not NULL it gets the one descriptor the reply carried, else -1; other descriptors are closed. */
int channel_call(struct channel *channel, void *request, size_t request_length, const int *descriptors,
                 int descriptor_count, uint16_t expected_type, void *reply_buffer, size_t reply_capacity,
                 struct wire_message *reply, int *received_descriptor);

/* channel_call, on the connection of `generation` only: ESTALE (nothing sent) once another replaced
 * it, for requests that carry an id that connection issued. */
int channel_call_on(struct channel *channel, uint64_t generation, void *request, size_t request_length,
                    const int *descriptors, int descriptor_count, uint16_t expected_type, void *reply_buffer,
                    size_t reply_capacity, struct wire_message *reply, int *received_descriptor);
/* The current connection's generation (read under the lock). */
uint64_t channel_generation(struct channel *channel);

/* Sends one frame with descriptors on a SOCK_SEQPACKET socket (MSG_NOSIGNAL, retrying EINTR). */
int seqpacket_send(int socket, const void *bytes, size_t length, const int *descriptors, int descriptor_count);
/* Receives one frame and up to `maximum_descriptors` descriptors (close-on-exec). Returns the byte
 * count, 0 at end of stream, -1 with errno; a truncated frame is EMSGSIZE (its descriptors closed). */
ssize_t seqpacket_receive(int socket, void *buffer, size_t capacity, int *descriptors, int maximum_descriptors,
                          int *descriptor_count);

#endif
