// Every kind of memory an MPI code sends from, each way between two ranks: a buffer on the stack,
// static data (.data and .bss), the malloc heap, an anonymous mmap, and a 64 MiB heap buffer freed
// and allocated again (glibc maps it at the same address again, so a peer's cached attachment of
// the first buffer must show the second one's bytes). The receiver checks every byte. XPMEM's
// users (UCX's rendezvous, MPICH's own xpmem module) attach exactly these addresses of the sender.
// Every message is large enough for their single-copy paths (UCX's rendezvous, MPICH's 4 KiB).
// Each rank prints "memory-kind NAME FIRST LAST" (decimal addresses) for every buffer it sends
// from, so that a check can match them with the ranges the sender's library backed. Prints "OK: …"
// or "FAILED: …" from rank 0 and exits 1 on a wrong byte, or when the reallocated buffer did not
// get the first one's address (then nothing tested following freed memory).
//
//   mpirun -n 2 memory-kinds
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define STACK_BYTES (256 << 10)
#define DATA_BYTES (256 << 10)
#define BSS_BYTES (1 << 20)
#define HEAP_BYTES (8 << 20)
#define MMAP_BYTES (8 << 20)
#define REUSED_BYTES (64 << 20)

static unsigned char data_buffer[DATA_BYTES] = {1};
static unsigned char bss_buffer[BSS_BYTES];

static unsigned char pattern_byte(long index, int seed) { return (unsigned char)((index * 131 + seed * 17 + 1) & 0xff); }

static void fill(unsigned char *buffer, long length, int seed)
{
    for (long index = 0; index < length; index++)
        buffer[index] = pattern_byte(index, seed);
}

// The index of the first wrong byte, or -1.
static long first_wrong(const unsigned char *buffer, long length, int seed)
{
    for (long index = 0; index < length; index++)
        if (buffer[index] != pattern_byte(index, seed))
            return index;
    return -1;
}

static int rank, failures, seed;

// One message of `length` bytes from `sender`'s `buffer` (filled here) to the other rank, checked
// there; the receiver's buffer is its own heap.
static void exchange(const char *kind, unsigned char *buffer, long length, int sender)
{
    seed++;
    if (rank == sender) {
        printf("memory-kind %s %lu %lu\n", kind, (unsigned long)(uintptr_t)buffer,
               (unsigned long)((uintptr_t)buffer + (uintptr_t)length - 1));
        fflush(stdout);
        fill(buffer, length, seed);
        MPI_Send(buffer, (int)length, MPI_BYTE, 1 - sender, seed, MPI_COMM_WORLD);
        return;
    }
    unsigned char *received = malloc((size_t)length);
    if (received == NULL)
        MPI_Abort(MPI_COMM_WORLD, 3);
    MPI_Recv(received, (int)length, MPI_BYTE, sender, seed, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    long wrong = first_wrong(received, length, seed);
    if (wrong >= 0) {
        printf("rank %d: %s from rank %d: byte %ld of %ld is wrong\n", rank, kind, sender, wrong, length);
        failures++;
    }
    free(received);
}

static __attribute__((noinline)) void exchange_from_stack(int sender)
{
    unsigned char buffer[STACK_BYTES];
    exchange("stack", buffer, STACK_BYTES, sender);
}

// Sends from a 64 MiB heap buffer, frees it, allocates the same size again and sends from that;
// returns whether the second buffer got the first one's address (on this rank).
static int exchange_reused(int sender)
{
    unsigned char *first = malloc(REUSED_BYTES);
    if (first == NULL)
        MPI_Abort(MPI_COMM_WORLD, 3);
    exchange("heap-buffer", first, REUSED_BYTES, sender);
    uintptr_t first_address = (uintptr_t)first;
    free(first);
    unsigned char *second = malloc(REUSED_BYTES);
    if (second == NULL)
        MPI_Abort(MPI_COMM_WORLD, 3);
    exchange("heap-buffer-allocated-again", second, REUSED_BYTES, sender);
    int same = (uintptr_t)second == first_address;
    free(second);
    return same;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2) {
        if (rank == 0)
            fprintf(stderr, "memory-kinds: needs exactly 2 ranks\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    unsigned char *heap = malloc(HEAP_BYTES);
    unsigned char *mapped = mmap(NULL, MMAP_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (heap == NULL || mapped == MAP_FAILED)
        MPI_Abort(MPI_COMM_WORLD, 3);
    int same_address = 1;
    for (int sender = 0; sender < 2; sender++) {
        exchange_from_stack(sender);
        exchange(".data", data_buffer, DATA_BYTES, sender);
        exchange(".bss", bss_buffer, BSS_BYTES, sender);
        exchange("heap", heap, HEAP_BYTES, sender);
        exchange("anonymous-mmap", mapped, MMAP_BYTES, sender);
        if (rank == sender)
            same_address &= exchange_reused(sender);
        else
            exchange_reused(sender);
    }
    int all_failures = 0, all_same = 0;
    MPI_Reduce(&failures, &all_failures, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Reduce(&same_address, &all_same, 1, MPI_INT, MPI_MIN, 0, MPI_COMM_WORLD);
    int passed = all_failures == 0 && all_same;
    if (rank == 0) {
        if (!all_same)
            printf("FAILED: the reallocated 64 MiB buffer got another address: following freed memory was not tested\n");
        else if (all_failures == 0)
            printf("OK: stack, .data, .bss, heap, anonymous mmap and a freed 64 MiB buffer allocated again at the "
                   "same address arrived intact both ways\n");
        else
            printf("FAILED: %d message(s) arrived with wrong bytes\n", all_failures);
    }
    MPI_Finalize();
    return rank == 0 && !passed ? 1 : 0;
}
