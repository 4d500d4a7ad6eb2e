#include "channel.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "broker_errors.h"
#include "debug_log.h"

/* Frames carry at most two descriptors (makeAddressSpace); room for a few more so a misbehaving
 * peer's extras are received and closed instead of leaking in flight. */
#define MAX_FRAME_DESCRIPTORS 8

int channel_connect(struct channel *channel, const char *path)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof address.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(address.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int result;
    do {
        result = connect(fd, (struct sockaddr *)&address, sizeof address);
    } while (result < 0 && errno == EINTR);
    if (result < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    pthread_mutex_lock(&channel->lock);
    channel->socket = fd;
    channel->broken = false;
    channel->generation++;
    pthread_mutex_unlock(&channel->lock);
    return 0;
}

uint64_t channel_generation(struct channel *channel)
{
    pthread_mutex_lock(&channel->lock);
    uint64_t generation = channel->generation;
    pthread_mutex_unlock(&channel->lock);
    return generation;
}

void channel_close(struct channel *channel)
{
    if (channel->socket >= 0)
        close(channel->socket);
    channel->socket = -1;
    channel->broken = true;
}

int seqpacket_send(int socket, const void *bytes, size_t length, const int *descriptors, int descriptor_count)
{
    struct iovec vector = {.iov_base = (void *)bytes, .iov_len = length};
    union {
        char buffer[CMSG_SPACE(sizeof(int) * MAX_FRAME_DESCRIPTORS)];
        struct cmsghdr align;
    } control;
    struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1};
    if (descriptor_count > 0) {
        memset(&control, 0, sizeof control);
        message.msg_control = control.buffer;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)descriptor_count);
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)descriptor_count);
        memcpy(CMSG_DATA(header), descriptors, sizeof(int) * (size_t)descriptor_count);
    }
    ssize_t sent;
    do {
        sent = sendmsg(socket, &message, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0)
        return -1;
    if ((size_t)sent != length) {
        errno = EMSGSIZE;
        return -1;
    }
    return 0;
}

static ssize_t receive_with_flags(int socket, void *buffer, size_t capacity, int *descriptors, int maximum_descriptors,
                                  int *descriptor_count, int flags);

ssize_t seqpacket_receive(int socket, void *buffer, size_t capacity, int *descriptors, int maximum_descriptors,
                          int *descriptor_count)
{
    return receive_with_flags(socket, buffer, capacity, descriptors, maximum_descriptors, descriptor_count, 0);
}

static ssize_t receive_with_flags(int socket, void *buffer, size_t capacity, int *descriptors, int maximum_descriptors,
                                  int *descriptor_count, int flags)
{
    struct iovec vector = {.iov_base = buffer, .iov_len = capacity};
    union {
        char buffer[CMSG_SPACE(sizeof(int) * MAX_FRAME_DESCRIPTORS)];
        struct cmsghdr align;
    } control;
    struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.buffer,
                             .msg_controllen = sizeof control.buffer};
    ssize_t received;
    do {
        received = recvmsg(socket, &message, MSG_CMSG_CLOEXEC | flags);
    } while (received < 0 && errno == EINTR);
    *descriptor_count = 0;
    if (received < 0)
        return -1;
    bool dropped_descriptor = false;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t index = 0; index < count; index++) {
            int fd;
            memcpy(&fd, CMSG_DATA(header) + index * sizeof(int), sizeof fd);
            if (*descriptor_count < maximum_descriptors) {
                descriptors[(*descriptor_count)++] = fd;
            } else {
                close(fd);
                dropped_descriptor = true;
            }
        }
    }
    if ((message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
        for (int index = 0; index < *descriptor_count; index++)
            close(descriptors[index]);
        *descriptor_count = 0;
        errno = EMSGSIZE;
        return -1;
    }
    (void)dropped_descriptor;
    return received;
}

/* How long a caller polls for the broker's reply before it sleeps: XPMEM_SPIN_US microseconds (the
 * Swift client's variable), 50 by default, 0 never. Read once. */
static uint64_t reply_spin_ns(void)
{
    static _Atomic long long cached = -1;
    long long value = cached;
    if (value < 0) {
        const char *text = getenv("XPMEM_SPIN_US");
        char *end = NULL;
        long long microseconds = text != NULL ? strtoll(text, &end, 10) : 50;
        if (text != NULL && (end == text || *end != '\0' || microseconds < 0))
            microseconds = 50;
        if (microseconds > 1000000)
            microseconds = 1000000;
        value = microseconds * 1000;
        cached = value;
    }
    return (uint64_t)value;
}

static uint64_t monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/* Whether the broker may have to wait for another process before it answers a request of `type`:
 * an attach or a fault of an address-space window (the exporter backs or fills the range first) and
 * a remove (importers acknowledge an invalidation). Their callers sleep at once: polling would take
 * a core from the very process the answer waits for (measured: an attach through the broker took
 * 37-79 us polled against 25-35 us sleeping, on two cores). */
static bool waits_for_other_clients(uint16_t type)
{
    return type == WIRE_ATTACH || type == WIRE_RESOLVE_FAULT || type == WIRE_REMOVE;
}

/* Receives the reply to a request of `type`: polls first, then sleeps. Most replies come within
 * microseconds (the broker spins for requests) while a blocking wake-up costs tens of them here.
 * Each empty poll yields the CPU, which the broker may need on this very CPU. */
static ssize_t receive_reply(int socket, uint16_t type, void *buffer, size_t capacity, int *descriptors,
                             int *descriptor_count)
{
    uint64_t budget = waits_for_other_clients(type) ? 0 : reply_spin_ns();
    if (budget > 0) {
        uint64_t started = monotonic_ns();
        do {
            ssize_t received = receive_with_flags(socket, buffer, capacity, descriptors, MAX_FRAME_DESCRIPTORS,
                                                  descriptor_count, MSG_DONTWAIT);
            if (received >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                return received;
            sched_yield();
        } while (monotonic_ns() - started < budget);
    }
    return seqpacket_receive(socket, buffer, capacity, descriptors, MAX_FRAME_DESCRIPTORS, descriptor_count);
}

/* Called with the lock held: one request out, its reply in. */
static int exchange(struct channel *channel, void *request, size_t request_length, const int *descriptors,
                    int descriptor_count, void *reply_buffer, size_t reply_capacity, struct wire_message *reply,
                    int *received, int *received_count)
{
    uint32_t request_id = channel->next_request_id++;
    if (channel->next_request_id == 0)
        channel->next_request_id = 1; /* 0 marks events */
    uint8_t *header = request;
    for (int index = 0; index < 4; index++)
        header[8 + index] = (uint8_t)(request_id >> (8 * index));

    if (seqpacket_send(channel->socket, request, request_length, descriptors, descriptor_count) < 0) {
        debug_log("sending to the broker failed: %s", strerror(errno));
        channel->broken = true;
        errno = ENOTCONN;
        return -1;
    }
    uint16_t type = (uint16_t)(header[6] | header[7] << 8);
    ssize_t length = receive_reply(channel->socket, type, reply_buffer, reply_capacity, received, received_count);
    if (length <= 0) {
        debug_log("the broker %s", length == 0 ? "closed the connection" : strerror(errno));
        channel->broken = true;
        errno = ENOTCONN;
        return -1;
    }
    if (wire_decode(reply_buffer, (size_t)length, reply) < 0 || reply->header.request_id != request_id) {
        debug_log("the broker's reply is malformed or answers another request (protocol version %u?)",
                  length >= 6 ? (unsigned)((uint8_t *)reply_buffer)[4] : 0u);
        channel->broken = true;
        errno = EPROTO;
        return -1;
    }
    return 0;
}

int channel_call(struct channel *channel, void *request, size_t request_length, const int *descriptors,
                 int descriptor_count, uint16_t expected_type, void *reply_buffer, size_t reply_capacity,
                 struct wire_message *reply, int *received_descriptor)
{
    return channel_call_on(channel, 0, request, request_length, descriptors, descriptor_count, expected_type,
                           reply_buffer, reply_capacity, reply, received_descriptor);
}

int channel_call_on(struct channel *channel, uint64_t generation, void *request, size_t request_length,
                    const int *descriptors, int descriptor_count, uint16_t expected_type, void *reply_buffer,
                    size_t reply_capacity, struct wire_message *reply, int *received_descriptor)
{
    if (received_descriptor != NULL)
        *received_descriptor = -1;
    if (request_length == 0) {
        errno = EINVAL;
        return -1;
    }
    int received[MAX_FRAME_DESCRIPTORS];
    int received_count = 0;
    pthread_mutex_lock(&channel->lock);
    int result;
    if (channel->broken || channel->socket < 0) {
        errno = ENOTCONN;
        result = -1;
    } else if (generation != 0 && generation != channel->generation) {
        errno = ESTALE;
        result = -1;
    } else {
        result = exchange(channel, request, request_length, descriptors, descriptor_count, reply_buffer,
                          reply_capacity, reply, received, &received_count);
    }
    pthread_mutex_unlock(&channel->lock);

    int kept = 0;
    if (result == 0 && received_descriptor != NULL && received_count > 0) {
        *received_descriptor = received[0];
        kept = 1;
    }
    for (int index = kept; index < received_count; index++)
        close(received[index]);
    if (result < 0)
        return -1;

    if (reply->header.type == WIRE_FAILURE) {
        debug_log("the broker refused request 0x%04x: %s: %.*s", ((uint8_t *)request)[6] | ((uint8_t *)request)[7] << 8,
                  broker_code_name(reply->as.failure.code), (int)reply->as.failure.text_length, reply->as.failure.text);
        if (kept) {
            close(*received_descriptor);
            *received_descriptor = -1;
        }
        errno = errno_for_broker_code(reply->as.failure.code);
        return -1;
    }
    if (expected_type != 0 && reply->header.type != expected_type) {
        debug_log("the broker answered with type 0x%04x where 0x%04x was expected", reply->header.type, expected_type);
        if (kept) {
            close(*received_descriptor);
            *received_descriptor = -1;
        }
        errno = EPROTO;
        return -1;
    }
    return 0;
}
