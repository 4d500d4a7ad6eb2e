// Shared by the MPI reference programs: size parsing and the measurement schedule, identical to the
// Swift examples' (Sources/XPMEMComm/MeasurementSchedule.swift) so that both print comparable figures.
#ifndef XPMEM_MPI_COMMON_H
#define XPMEM_MPI_COMMON_H

#include <stdlib.h>
#include <string.h>

/// "64", "8K", "1M", "64M" -> bytes; -1 when malformed.
static long parse_size(const char *text) {
    char *end = NULL;
    long value = strtol(text, &end, 10);
    if (end == text || value < 0) return -1;
    if (*end == 'K' || *end == 'k') { value <<= 10; end++; }
    else if (*end == 'M' || *end == 'm') { value <<= 20; end++; }
    else if (*end == 'G' || *end == 'g') { value <<= 30; end++; }
    return *end == '\0' ? value : -1;
}

/// Round trips per batch for a message size: enough work per batch to dwarf the clock's cost,
/// few enough that 64 MiB finishes quickly. `scale` shrinks it for tests.
static long round_trips_per_batch(long size, double scale) {
    long base = size <= 8192 ? 2000 : (256L << 20) / size;
    long scaled = (long)(base * scale);
    return scaled < 2 ? 2 : scaled;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *values, int count) {
    qsort(values, count, sizeof(double), compare_doubles);
    return values[count / 2];
}

#endif
