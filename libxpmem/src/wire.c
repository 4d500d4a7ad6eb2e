/* Little-endian field encoding for the broker's frames, with bounds checks on both sides. */
#include "wire.h"

#include <string.h>

void wire_begin(struct wire_writer *writer, void *buffer, size_t capacity, uint16_t type, uint32_t request_id)
{
    writer->bytes = buffer;
    writer->capacity = capacity;
    writer->length = 0;
    writer->overflowed = false;
    wire_put_u32(writer, WIRE_MAGIC);
    wire_put_u16(writer, WIRE_VERSION);
    wire_put_u16(writer, type);
    wire_put_u32(writer, request_id);
    wire_put_u32(writer, 0); /* payload length, patched by wire_finish */
}

static void put_little_endian(struct wire_writer *writer, uint64_t value, size_t size)
{
    if (writer->overflowed || writer->capacity - writer->length < size) {
        writer->overflowed = true;
        return;
    }
    for (size_t index = 0; index < size; index++)
        writer->bytes[writer->length + index] = (uint8_t)(value >> (8 * index));
    writer->length += size;
}

void wire_put_u8(struct wire_writer *writer, uint8_t value) { put_little_endian(writer, value, 1); }
void wire_put_u16(struct wire_writer *writer, uint16_t value) { put_little_endian(writer, value, 2); }
void wire_put_u32(struct wire_writer *writer, uint32_t value) { put_little_endian(writer, value, 4); }
void wire_put_u64(struct wire_writer *writer, uint64_t value) { put_little_endian(writer, value, 8); }

void wire_put_string(struct wire_writer *writer, const char *text, size_t maximum_length)
{
    size_t length = text ? strlen(text) : 0;
    if (length > maximum_length) {
        length = maximum_length;
        /* Never end inside a multi-byte character: back up over continuation bytes. */
        while (length > 0 && ((unsigned char)text[length] & 0xC0) == 0x80)
            length--;
    }
    wire_put_u16(writer, (uint16_t)length);
    if (writer->overflowed || writer->capacity - writer->length < length) {
        writer->overflowed = true;
        return;
    }
    if (length > 0)
        memcpy(writer->bytes + writer->length, text, length);
    writer->length += length;
}

size_t wire_finish(struct wire_writer *writer)
{
    if (writer->overflowed || writer->length < WIRE_HEADER_SIZE)
        return 0;
    uint32_t payload = (uint32_t)(writer->length - WIRE_HEADER_SIZE);
    for (size_t index = 0; index < 4; index++)
        writer->bytes[12 + index] = (uint8_t)(payload >> (8 * index));
    return writer->length;
}

static uint64_t get_little_endian(struct wire_reader *reader, size_t size)
{
    if (reader->failed || reader->length - reader->position < size) {
        reader->failed = true;
        return 0;
    }
    uint64_t value = 0;
    for (size_t index = 0; index < size; index++)
        value |= (uint64_t)reader->bytes[reader->position + index] << (8 * index);
    reader->position += size;
    return value;
}

uint8_t wire_get_u8(struct wire_reader *reader) { return (uint8_t)get_little_endian(reader, 1); }
uint16_t wire_get_u16(struct wire_reader *reader) { return (uint16_t)get_little_endian(reader, 2); }
uint32_t wire_get_u32(struct wire_reader *reader) { return (uint32_t)get_little_endian(reader, 4); }
uint64_t wire_get_u64(struct wire_reader *reader) { return get_little_endian(reader, 8); }

void wire_get_string(struct wire_reader *reader, const char **text, uint16_t *length)
{
    *length = wire_get_u16(reader);
    *text = "";
    if (reader->failed || reader->length - reader->position < *length) {
        reader->failed = true;
        *length = 0;
        return;
    }
    *text = (const char *)reader->bytes + reader->position;
    reader->position += *length;
}
