// The MPI twin of Examples/allreduce: MPI_Allreduce(MPI_SUM) of a vector of doubles, checked against
// a serial sum, timed with the same schedule and printed in the same format as ours.
//
//   mpirun.openmpi -n 2 allreduce-mpi [--sizes 1M,8M] [--scale 0.1] [--batches 5]
#include <mpi.h>
#include <stdio.h>
#include "common.h"

#define MAX_SIZES 32

/// Integer-valued doubles: every partial sum is exact, so any summation order gives the same bits.
static double contribution(int rank, long index) { return (double)((rank + 1) * (index % 1021)) + 0.5; }

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long sizes[MAX_SIZES] = {1L << 20};
    int size_count = 1;
    double scale = 1;
    int batches = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sizes") && i + 1 < argc) {
            size_count = 0;
            for (char *item = strtok(argv[++i], ","); item && size_count < MAX_SIZES; item = strtok(NULL, ","))
                sizes[size_count++] = parse_size(item);
        } else if (!strcmp(argv[i], "--scale") && i + 1 < argc) scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--batches") && i + 1 < argc) batches = atoi(argv[++i]);
        else {
            if (rank == 0) fprintf(stderr, "allreduce-mpi: unknown argument %s\n", argv[i]);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
    if (rank == 0) {
        printf("# allreduce (sum of doubles): Open MPI %d ranks\n# %-12s %s\n", size, "Size", "Time (us)");
        fflush(stdout);
    }
    int failures = 0;
    double *batch_time = calloc(batches, sizeof(double));
    for (int s = 0; s < size_count; s++) {
        long count = sizes[s] / (long)sizeof(double);
        if (count < 1) MPI_Abort(MPI_COMM_WORLD, 2);
        double *input = malloc(count * sizeof(double)), *output = malloc(count * sizeof(double));
        for (long i = 0; i < count; i++) input[i] = contribution(rank, i);
        long repetitions = round_trips_per_batch(sizes[s], scale);
        for (int b = -1; b < batches; b++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double start = MPI_Wtime();
            for (long r = 0; r < repetitions; r++)
                MPI_Allreduce(input, output, (int)count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
            if (b >= 0) batch_time[b] = (MPI_Wtime() - start) * 1e6 / repetitions;
        }
        for (long i = 0; i < count; i++) {
            double expected = 0;
            for (int r = 0; r < size; r++) expected += contribution(r, i);
            if (output[i] != expected) { failures++; break; }
        }
        if (rank == 0) {
            printf("%-14ld %.3f\n", sizes[s], median(batch_time, batches));
            fflush(stdout);
        }
        free(input);
        free(output);
    }
    int total_failures = 0;
    MPI_Allreduce(&failures, &total_failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf(total_failures ? "FAILED: %d results differ from the serial sum\n" : "OK: matches the serial sum\n", total_failures);
    free(batch_time);
    MPI_Finalize();
    return total_failures ? 1 : 0;
}
