/* fork() in an exporting process keeps its meaning: the child gets a private copy of the parent's
 * memory, not a share of it.
 *
 * Backed memory is a shared mapping of the address-space file, which fork() would leave shared
 * between parent and child. So the child, first thing after fork (a pthread_atfork handler, before
 * any of the application's code runs in it), replaces every mapping of that file (backed memory, a
 * backed mapping just moved by mremap, an attachment of its own segment) with private anonymous
 * memory holding a copy of its bytes (only the pages the file holds; the rest stays zero), running
 * on the library's private stack since its own stack may be backed memory. The parent's forking
 * thread waits in its own atfork handler until the child has copied, so what it writes after fork()
 * returns never reaches the child. Other threads of the parent are not stopped (stopping them
 * around fork() could deadlock on the locks fork itself takes): a write they make to backed memory
 * while the child copies may show in the child's copy. */
#ifndef XPMEM_FORK_SNAPSHOT_H
#define XPMEM_FORK_SNAPSHOT_H

void fork_snapshot_prepare(void);
void fork_snapshot_parent(void);
void fork_snapshot_child(void);

#endif
