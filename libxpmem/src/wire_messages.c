/* The messages of protocol 3 a C client sends and receives, field by field as the broker lays them out. */
#include "wire.h"

size_t wire_encode_hello(void *buffer, size_t capacity, uint32_t request_id, const char *client_name)
{
    struct wire_writer writer;
    wire_begin(&writer, buffer, capacity, WIRE_HELLO, request_id);
    wire_put_string(&writer, client_name, WIRE_MAX_NAME);
    return wire_finish(&writer);
}

size_t wire_encode_subscribe(void *buffer, size_t capacity, uint32_t request_id)
{
    struct wire_writer writer;
    wire_begin(&writer, buffer, capacity, WIRE_SUBSCRIBE, request_id);
    return wire_finish(&writer);
}

size_t wire_encode_make_address_space(void *buffer, size_t capacity, uint32_t request_id, uint64_t base,
                                      uint64_t size, uint32_t permit, const char *name)
{
    struct wire_writer writer;
    wire_begin(&writer, buffer, capacity, WIRE_MAKE_ADDRESS_SPACE, request_id);
    wire_put_u64(&writer, base);
    wire_put_u64(&writer, size);
    wire_put_u32(&writer, permit);
    wire_put_string(&writer, name, WIRE_MAX_NAME);
    return wire_finish(&writer);
}

size_t wire_encode_claim_address_space(void *buffer, size_t capacity, uint32_t request_id, uint64_t segment,
                                       const uint64_t token[2], uint64_t base, uint64_t size, uint32_t permit,
                                       const char *name)
{
    struct wire_writer writer;
    wire_begin(&writer, buffer, capacity, WIRE_CLAIM_ADDRESS_SPACE, request_id);
    wire_put_u64(&writer, segment);
    wire_put_u64(&writer, token[0]);
    wire_put_u64(&writer, token[1]);
    wire_put_u64(&writer, base);
    wire_put_u64(&writer, size);
    wire_put_u32(&writer, permit);
    wire_put_string(&writer, name, WIRE_MAX_NAME);
    return wire_finish(&writer);
}

size_t wire_encode_report_attach_cache(void *buffer, size_t capacity, uint32_t request_id,
                                       const struct wire_attach_cache_counters *counters)
{
    struct wire_writer writer;
    wire_begin(&writer, buffer, capacity, WIRE_REPORT_ATTACH_CACHE, request_id);
    wire_put_u64(&writer, counters->hits);
    wire_put_u64(&writer, counters->misses);
    wire_put_u64(&writer, counters->capacity_evictions);
    wire_put_u64(&writer, counters->pressure_evictions);
    wire_put_u64(&writer, counters->entries);
    wire_put_u64(&writer, counters->bytes);
    return wire_finish(&writer);
}

/* remove, release and detach all carry one u64 id. */
static size_t encode_one_id(void *buffer, size_t capacity, uint16_t type, uint32_t request_id, uint64_t id)
{
    struct wire_writer writer;
    wire_begin(&writer, buffer, capacity, type, request_id);
    wire_put_u64(&writer, id);
    return wire_finish(&writer);
}

size_t wire_encode_remove(void *buffer, size_t capacity, uint32_t request_id, uint64_t segment)
{
    return encode_one_id(buffer, capacity, WIRE_REMOVE, request_id, segment);
}

size_t wire_encode_release(void *buffer, size_t capacity, uint32_t request_id, uint64_t handle)
{
    return encode_one_id(buffer, capacity, WIRE_RELEASE, request_id, handle);
}

size_t wire_encode_detach(void *buffer, size_t capacity, uint32_t request_id, uint64_t attachment)
{
    return encode_one_id(buffer, capacity, WIRE_DETACH, request_id, attachment);
}

size_t wire_encode_get(void *buffer, size_t capacity, uint32_t request_id, uint64_t segment, uint8_t access)
{
    struct wire_writer writer;
    wire_begin(&writer, buffer, capacity, WIRE_GET, request_id);
    wire_put_u64(&writer, segment);
    wire_put_u8(&writer, access);
    return wire_finish(&writer);
}

static size_t encode_window_request(void *buffer, size_t capacity, uint16_t type, uint32_t request_id,
                                    uint64_t handle, uint64_t offset, uint64_t length)
{
    struct wire_writer writer;
    wire_begin(&writer, buffer, capacity, type, request_id);
    wire_put_u64(&writer, handle);
    wire_put_u64(&writer, offset);
    wire_put_u64(&writer, length);
    return wire_finish(&writer);
}

size_t wire_encode_attach(void *buffer, size_t capacity, uint32_t request_id, uint64_t handle, uint64_t offset,
                          uint64_t length)
{
    return encode_window_request(buffer, capacity, WIRE_ATTACH, request_id, handle, offset, length);
}

size_t wire_encode_resolve_fault(void *buffer, size_t capacity, uint32_t request_id, uint64_t handle, uint64_t offset,
                                 uint64_t length)
{
    return encode_window_request(buffer, capacity, WIRE_RESOLVE_FAULT, request_id, handle, offset, length);
}

size_t wire_encode_query_status(void *buffer, size_t capacity, uint32_t request_id)
{
    struct wire_writer writer;
    wire_begin(&writer, buffer, capacity, WIRE_QUERY_STATUS, request_id);
    return wire_finish(&writer);
}

size_t wire_encode_acknowledge(void *buffer, size_t capacity, uint64_t segment, uint64_t sequence)
{
    struct wire_writer writer;
    wire_begin(&writer, buffer, capacity, WIRE_ACKNOWLEDGE, 0);
    wire_put_u64(&writer, segment);
    wire_put_u64(&writer, sequence);
    return wire_finish(&writer);
}

size_t wire_encode_range_backed(void *buffer, size_t capacity, uint64_t segment, uint64_t sequence, uint16_t code,
                                const char *text, const struct wire_extent *extents, uint32_t count)
{
    struct wire_writer writer;
    wire_begin(&writer, buffer, capacity, WIRE_RANGE_BACKED, 0);
    wire_put_u64(&writer, segment);
    wire_put_u64(&writer, sequence);
    wire_put_u16(&writer, code);
    wire_put_string(&writer, text, WIRE_MAX_NAME);
    wire_put_u32(&writer, count);
    for (uint32_t index = 0; index < count; index++) {
        wire_put_u64(&writer, extents[index].start);
        wire_put_u64(&writer, extents[index].length);
    }
    return wire_finish(&writer);
}

struct wire_extent wire_window_extent(const uint8_t *extents, uint32_t index)
{
    struct wire_reader reader = {.bytes = extents + (size_t)index * 16, .length = 16};
    struct wire_extent extent;
    extent.start = wire_get_u64(&reader);
    extent.length = wire_get_u64(&reader);
    return extent;
}

/* Reads `count` × 16-byte extents, refusing a count the frame cannot hold. */
static const uint8_t *take_extents(struct wire_reader *reader, uint32_t count)
{
    if (reader->failed || (reader->length - reader->position) / 16 < count) {
        reader->failed = true;
        return NULL;
    }
    const uint8_t *start = reader->bytes + reader->position;
    reader->position += (size_t)count * 16;
    return start;
}

static void decode_payload(struct wire_reader *reader, struct wire_message *message, bool *allow_trailing)
{
    switch (message->header.type) {
    case WIRE_WELCOME:
        message->as.welcome.client = wire_get_u64(reader);
        message->as.welcome.broker_pid = (int32_t)wire_get_u32(reader);
        break;
    case WIRE_MADE:
        message->as.made.segment = wire_get_u64(reader);
        break;
    case WIRE_GRANTED:
        message->as.granted.handle = wire_get_u64(reader);
        message->as.granted.size = wire_get_u64(reader);
        message->as.granted.access = wire_get_u8(reader);
        break;
    case WIRE_ATTACHED:
        message->as.attached.attachment = wire_get_u64(reader);
        break;
    case WIRE_ATTACHED_WINDOW:
        message->as.attached_window.attachment = wire_get_u64(reader);
        message->as.attached_window.file_offset = wire_get_u64(reader);
        message->as.attached_window.count = wire_get_u32(reader);
        message->as.attached_window.extents = take_extents(reader, message->as.attached_window.count);
        break;
    case WIRE_FAULT_RESOLVED:
        message->as.fault_resolved.count = wire_get_u32(reader);
        message->as.fault_resolved.extents = take_extents(reader, message->as.fault_resolved.count);
        break;
    case WIRE_DONE:
        break;
    case WIRE_FAILURE:
        message->as.failure.code = wire_get_u16(reader);
        wire_get_string(reader, &message->as.failure.text, &message->as.failure.text_length);
        break;
    case WIRE_STATUS:
        message->as.status.protocol_version = wire_get_u16(reader);
        message->as.status.pid = (int32_t)wire_get_u32(reader);
        message->as.status.uptime_milliseconds = wire_get_u64(reader);
        message->as.status.clients = wire_get_u32(reader);
        message->as.status.segments = wire_get_u32(reader);
        message->as.status.grants = wire_get_u32(reader);
        message->as.status.attachments = wire_get_u32(reader);
        message->as.status.open_descriptors = wire_get_u32(reader);
        message->as.status.numa_nodes = wire_get_u32(reader);
        /* A later broker may report more; what we read is still right. */
        *allow_trailing = true;
        break;
    case WIRE_BACK_RANGE:
    case WIRE_FILL_RANGE:
        message->as.back_range.segment = wire_get_u64(reader);
        message->as.back_range.sequence = wire_get_u64(reader);
        message->as.back_range.start = wire_get_u64(reader);
        message->as.back_range.length = wire_get_u64(reader);
        break;
    case WIRE_INVALIDATE_BEGIN:
        message->as.invalidate_begin.segment = wire_get_u64(reader);
        message->as.invalidate_begin.offset = wire_get_u64(reader);
        message->as.invalidate_begin.length = wire_get_u64(reader);
        message->as.invalidate_begin.sequence = wire_get_u64(reader);
        message->as.invalidate_begin.reason = wire_get_u8(reader);
        break;
    case WIRE_INVALIDATE_END:
        message->as.invalidate_end.segment = wire_get_u64(reader);
        message->as.invalidate_end.offset = wire_get_u64(reader);
        message->as.invalidate_end.length = wire_get_u64(reader);
        message->as.invalidate_end.sequence = wire_get_u64(reader);
        break;
    case WIRE_RELEASED:
        message->as.released.segment = wire_get_u64(reader);
        message->as.released.reason = wire_get_u8(reader);
        break;
    case WIRE_SEGMENT_FILE_REPLACED:
        message->as.segment_file_replaced.segment = wire_get_u64(reader);
        message->as.segment_file_replaced.access = wire_get_u8(reader);
        break;
    case WIRE_RANGE_BACKED:
        message->as.range_backed.segment = wire_get_u64(reader);
        message->as.range_backed.sequence = wire_get_u64(reader);
        message->as.range_backed.code = wire_get_u16(reader);
        wire_get_string(reader, &message->as.range_backed.text, &message->as.range_backed.text_length);
        message->as.range_backed.count = wire_get_u32(reader);
        message->as.range_backed.extents = take_extents(reader, message->as.range_backed.count);
        break;
    default:
        /* A type this library does not know: the caller decides (the header alone is valid). */
        *allow_trailing = true;
        break;
    }
}

int wire_decode(const void *frame, size_t length, struct wire_message *message)
{
    struct wire_reader reader = {.bytes = frame, .length = length};
    message->header.magic = wire_get_u32(&reader);
    message->header.version = wire_get_u16(&reader);
    message->header.type = wire_get_u16(&reader);
    message->header.request_id = wire_get_u32(&reader);
    message->header.payload_length = wire_get_u32(&reader);
    if (reader.failed || message->header.magic != WIRE_MAGIC || message->header.version != WIRE_VERSION
        || message->header.payload_length != length - WIRE_HEADER_SIZE)
        return -1;
    bool allow_trailing = false;
    decode_payload(&reader, message, &allow_trailing);
    if (reader.failed || (!allow_trailing && reader.position != reader.length))
        return -1;
    return 0;
}
