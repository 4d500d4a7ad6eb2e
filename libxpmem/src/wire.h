/* The broker's wire protocol, version 3: byte-exact encoding of requests and decoding of replies
 * and events. Pure functions over caller-owned buffers, so they can be unit-tested with golden
 * bytes and used by the event thread without allocating. */
#ifndef XPMEM_WIRE_H
#define XPMEM_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_MAGIC 0x4D4D5058u /* "XPMM" little-endian */
#define WIRE_VERSION 3
#define WIRE_HEADER_SIZE 16
#define WIRE_MAX_REQUEST 4096
#define WIRE_MAX_REPLY 65536
#define WIRE_MAX_NAME 256
/* The exporter may report at most this many extents in one rangeBacked. */
#define WIRE_MAX_BACKED_EXTENTS 240

enum wire_type {
    WIRE_HELLO = 0x0001,
    WIRE_REMOVE = 0x0003,
    WIRE_GET = 0x0004,
    WIRE_RELEASE = 0x0005,
    WIRE_ATTACH = 0x0006,
    WIRE_DETACH = 0x0007,
    WIRE_QUERY_STATUS = 0x000A,
    WIRE_SUBSCRIBE = 0x000B,
    WIRE_MAKE_ADDRESS_SPACE = 0x000F,
    WIRE_RESOLVE_FAULT = 0x0011,
    WIRE_CLAIM_ADDRESS_SPACE = 0x0012,
    WIRE_REPORT_ATTACH_CACHE = 0x0014,

    WIRE_ACKNOWLEDGE = 0x2001,
    WIRE_RANGE_BACKED = 0x2002,

    WIRE_INVALIDATE_BEGIN = 0x4001,
    WIRE_INVALIDATE_END = 0x4002,
    WIRE_RELEASED = 0x4003,
    WIRE_BACK_RANGE = 0x4004,
    WIRE_FILL_RANGE = 0x4005, /* decoded into as.back_range */
    WIRE_SEGMENT_FILE_REPLACED = 0x4006,

    WIRE_WELCOME = 0x8001,
    WIRE_MADE = 0x8002,
    WIRE_GRANTED = 0x8003,
    WIRE_ATTACHED = 0x8004,
    WIRE_DONE = 0x8005,
    WIRE_FAILURE = 0x8006,
    WIRE_STATUS = 0x8009,
    WIRE_ATTACHED_WINDOW = 0x800B,
    WIRE_FAULT_RESOLVED = 0x800C,
};

enum wire_error_code {
    WIRE_NOT_FOUND = 1,
    WIRE_PERMISSION_DENIED = 2,
    WIRE_INVALID_ARGUMENT = 3,
    WIRE_PROTOCOL_MISMATCH = 4,
    WIRE_MALFORMED_FRAME = 5,
    WIRE_RESOURCE_EXHAUSTED = 6,
    WIRE_NOT_CONNECTED = 7,
    WIRE_INTERNAL_ERROR = 8,
    WIRE_DEADLINE_MISSED = 9,
    WIRE_BUSY = 10,
};

enum wire_access { WIRE_READ_ONLY = 1, WIRE_READ_WRITE = 2 };

/* A run of file bytes [start, start + length). */
struct wire_extent {
    uint64_t start;
    uint64_t length;
};

/* Appends little-endian fields to a fixed buffer; any overflow makes wire_finish fail. */
struct wire_writer {
    uint8_t *bytes;
    size_t capacity;
    size_t length;
    bool overflowed;
};

void wire_begin(struct wire_writer *writer, void *buffer, size_t capacity, uint16_t type, uint32_t request_id);
void wire_put_u8(struct wire_writer *writer, uint8_t value);
void wire_put_u16(struct wire_writer *writer, uint16_t value);
void wire_put_u32(struct wire_writer *writer, uint32_t value);
void wire_put_u64(struct wire_writer *writer, uint64_t value);
/* A u16 length and the bytes, cut to maximum_length bytes on a UTF-8 character boundary. */
void wire_put_string(struct wire_writer *writer, const char *text, size_t maximum_length);
/* Patches the payload length; returns the frame's size, or 0 when it did not fit. */
size_t wire_finish(struct wire_writer *writer);

/* Reads little-endian fields with bounds checks; a read past the end sets `failed`. */
struct wire_reader {
    const uint8_t *bytes;
    size_t length;
    size_t position;
    bool failed;
};

uint8_t wire_get_u8(struct wire_reader *reader);
uint16_t wire_get_u16(struct wire_reader *reader);
uint32_t wire_get_u32(struct wire_reader *reader);
uint64_t wire_get_u64(struct wire_reader *reader);
/* Points *text at the string's bytes inside the frame (not NUL-terminated). */
void wire_get_string(struct wire_reader *reader, const char **text, uint16_t *length);

struct wire_header {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t request_id;
    uint32_t payload_length;
};

/* Requests. Each returns the frame's size in `buffer`, or 0 when it does not fit. */
size_t wire_encode_hello(void *buffer, size_t capacity, uint32_t request_id, const char *client_name);
size_t wire_encode_subscribe(void *buffer, size_t capacity, uint32_t request_id);
size_t wire_encode_make_address_space(void *buffer, size_t capacity, uint32_t request_id, uint64_t base,
                                      uint64_t size, uint32_t permit, const char *name);
/* makeAddressSpace under the id the 128-bit reclaim token stands for: `segment` 0 for a first
 * export, or the id it had, to register it again after the broker restarted. */
size_t wire_encode_claim_address_space(void *buffer, size_t capacity, uint32_t request_id, uint64_t segment,
                                       const uint64_t token[2], uint64_t base, uint64_t size, uint32_t permit,
                                       const char *name);
size_t wire_encode_remove(void *buffer, size_t capacity, uint32_t request_id, uint64_t segment);
size_t wire_encode_get(void *buffer, size_t capacity, uint32_t request_id, uint64_t segment, uint8_t access);
size_t wire_encode_release(void *buffer, size_t capacity, uint32_t request_id, uint64_t handle);
size_t wire_encode_attach(void *buffer, size_t capacity, uint32_t request_id, uint64_t handle, uint64_t offset,
                          uint64_t length);
/* An attachment faulted where the exporter's file has no page: back and fill [offset, +length). */
size_t wire_encode_resolve_fault(void *buffer, size_t capacity, uint32_t request_id, uint64_t handle, uint64_t offset,
                                 uint64_t length);
size_t wire_encode_detach(void *buffer, size_t capacity, uint32_t request_id, uint64_t attachment);
size_t wire_encode_query_status(void *buffer, size_t capacity, uint32_t request_id);
/* The attachment cache's counters, for `xpmemctl clients` (answered with done). */
struct wire_attach_cache_counters {
    uint64_t hits, misses, capacity_evictions, pressure_evictions, entries, bytes;
};
size_t wire_encode_report_attach_cache(void *buffer, size_t capacity, uint32_t request_id,
                                       const struct wire_attach_cache_counters *counters);

/* Sent by a client on its event channel. */
size_t wire_encode_acknowledge(void *buffer, size_t capacity, uint64_t segment, uint64_t sequence);
size_t wire_encode_range_backed(void *buffer, size_t capacity, uint64_t segment, uint64_t sequence, uint16_t code,
                                const char *text, const struct wire_extent *extents, uint32_t count);

/* A decoded reply or event. Pointers refer into the frame's buffer. */
struct wire_message {
    struct wire_header header;
    union {
        struct { uint64_t client; int32_t broker_pid; } welcome;
        struct { uint64_t segment; } made;
        struct { uint64_t handle; uint64_t size; uint8_t access; } granted;
        struct { uint64_t attachment; } attached;
        struct {
            uint64_t attachment;
            uint64_t file_offset;
            uint32_t count;
            const uint8_t *extents; /* count × (u64 start, u64 length), read with wire_window_extent */
        } attached_window;
        struct {
            uint32_t count;
            const uint8_t *extents; /* read with wire_window_extent */
        } fault_resolved;
        struct { uint16_t code; const char *text; uint16_t text_length; } failure;
        struct {
            uint16_t protocol_version;
            int32_t pid;
            uint64_t uptime_milliseconds;
            uint32_t clients, segments, grants, attachments, open_descriptors, numa_nodes;
        } status;
        struct { uint64_t segment, sequence, start, length; } back_range;
        struct { uint64_t segment, offset, length, sequence; uint8_t reason; } invalidate_begin;
        struct { uint64_t segment, offset, length, sequence; } invalidate_end;
        struct { uint64_t segment; uint8_t reason; } released;
        struct { uint64_t segment; uint8_t access; } segment_file_replaced;
        /* Only decoded by tests that play the broker. */
        struct {
            uint64_t segment, sequence;
            uint16_t code;
            const char *text;
            uint16_t text_length;
            uint32_t count;
            const uint8_t *extents;
        } range_backed;
    } as;
};

/* Decodes a whole frame: checks magic, version 3, the declared length, and that the payload of a
 * known type has exactly its fields. Returns 0, or -1 when the frame is malformed. */
int wire_decode(const void *frame, size_t length, struct wire_message *message);

struct wire_extent wire_window_extent(const uint8_t *extents, uint32_t index);

#endif
