/* The address-space file: one sparse memfd per exporting process, 2^47 bytes long, in which the
 * byte at file offset A is the process's memory at virtual address A once A is backed. Every
 * segment the process makes is a window of it, so importers map it at offset == address. */
#ifndef XPMEM_ADDRESS_SPACE_FILE_H
#define XPMEM_ADDRESS_SPACE_FILE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct address_space_file {
    int descriptor; /* read-write; -1 until the first make */
    dev_t device;
    ino_t inode;
};

/* The process's file, created on first use; -1 with errno on failure. */
int address_space_file_open(struct address_space_file *file);
/* The file as it is now (descriptor -1 before any make). Safe to call from the event thread. */
struct address_space_file address_space_file_current(void);
/* A fork child must not write into its parent's file: it gets its own on its next make. */
void address_space_file_forget(void);
/* Closes the file, emptied after the last window went: the next make starts a fresh one, so that a
 * descriptor an importer kept reaches nothing backed later. The caller holds the exports lock for
 * writing (no make in flight) and the backing lock (no backing uses the descriptor). */
void address_space_file_discard(void);

#endif
