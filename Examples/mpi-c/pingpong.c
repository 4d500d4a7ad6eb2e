// The MPI twin of Examples/pingpong: ranks 0 and 1 bounce a message of each size; half the round
// trip is the latency, size / latency the bandwidth. Same schedule and output as ours, so
// `xpmem-bench mpi` can put the two side by side.
//
//   mpirun.openmpi -n 2 pingpong-mpi [--sizes 0,8,1M] [--max-size 64M] [--scale 0.1] [--batches 5]
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include "common.h"

#define MAX_SIZES 64

static unsigned char pattern_byte(long size, long index) { return (unsigned char)((index * 131 + size) & 0xff); }

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long sizes[MAX_SIZES];
    int size_count = 0;
    long max_size = 64L << 20;
    double scale = 1;
    int batches = 5;
    const char *size_list = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sizes") && i + 1 < argc) size_list = argv[++i];
        else if (!strcmp(argv[i], "--max-size") && i + 1 < argc) max_size = parse_size(argv[++i]);
        else if (!strcmp(argv[i], "--scale") && i + 1 < argc) scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--batches") && i + 1 < argc) batches = atoi(argv[++i]);
        else {
            if (rank == 0) fprintf(stderr, "pingpong-mpi: unknown argument %s\n", argv[i]);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
    if (size < 2 || max_size < 0 || batches < 1) {
        if (rank == 0) fprintf(stderr, "pingpong-mpi: needs 2 ranks, a valid --max-size and --batches >= 1\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (size_list) {
        char *copy = strdup(size_list);
        for (char *item = strtok(copy, ","); item && size_count < MAX_SIZES; item = strtok(NULL, ",")) {
            long value = parse_size(item);
            if (value < 0) MPI_Abort(MPI_COMM_WORLD, 2);
            sizes[size_count++] = value;
            if (value > max_size) max_size = value;
        }
        free(copy);
    } else {
        sizes[size_count++] = 0;
        for (long s = 1; s <= max_size && size_count < MAX_SIZES; s *= 2) sizes[size_count++] = s;
    }
    unsigned char *buffer = NULL;
    if (posix_memalign((void **)&buffer, 4096, max_size ? max_size : 1)) MPI_Abort(MPI_COMM_WORLD, 3);
    memset(buffer, 0, max_size ? max_size : 1);
    int peer = 1 - rank;
    int failures = 0;
    if (rank == 0) {
        printf("# OSU-style ping-pong: Open MPI %d ranks\n# %-12s %-16s %s\n", size, "Size", "Latency (us)", "Bandwidth (MB/s)");
        fflush(stdout);
    }
    double *batch_latency = calloc(batches, sizeof(double));
    for (int s = 0; s < size_count; s++) {
        long bytes = sizes[s];
        // A correctness round first: rank 0 sends a pattern, rank 1 checks every byte and echoes it.
        if (rank == 0) {
            for (long i = 0; i < bytes; i++) buffer[i] = pattern_byte(bytes, i);
            MPI_Send(buffer, (int)bytes, MPI_BYTE, 1, 1, MPI_COMM_WORLD);
        } else if (rank == 1) {
            MPI_Recv(buffer, (int)bytes, MPI_BYTE, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            for (long i = 0; i < bytes; i++)
                if (buffer[i] != pattern_byte(bytes, i)) { failures++; break; }
        }
        long trips = round_trips_per_batch(bytes, scale);
        for (int b = -1; b < batches; b++) {  // batch -1 warms up
            MPI_Barrier(MPI_COMM_WORLD);
            double start = MPI_Wtime();
            for (long t = 0; t < trips; t++) {
                if (rank == 0) {
                    MPI_Send(buffer, (int)bytes, MPI_BYTE, peer, 0, MPI_COMM_WORLD);
                    MPI_Recv(buffer, (int)bytes, MPI_BYTE, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                } else if (rank == 1) {
                    MPI_Recv(buffer, (int)bytes, MPI_BYTE, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                    MPI_Send(buffer, (int)bytes, MPI_BYTE, peer, 0, MPI_COMM_WORLD);
                }
            }
            if (b >= 0) batch_latency[b] = (MPI_Wtime() - start) * 1e6 / (2.0 * trips);
        }
        if (rank == 0) {
            double latency = median(batch_latency, batches);
            printf("%-14ld %-16.3f %.2f\n", bytes, latency, latency > 0 ? bytes / latency : 0.0);
            fflush(stdout);
        }
    }
    int total_failures = 0;
    MPI_Allreduce(&failures, &total_failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf(total_failures ? "FAILED: %d sizes arrived corrupted\n" : "OK: every size arrived intact\n", total_failures);
    free(batch_latency);
    free(buffer);
    MPI_Finalize();
    return total_failures ? 1 : 0;
}
