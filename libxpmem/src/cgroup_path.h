/* Where this process's cgroup v2 files are: from the texts of /proc/self/cgroup and
 * /proc/self/mountinfo, as the kernel writes them. Pure, so that it is tested on made-up texts. */
#ifndef XPMEM_CGROUP_PATH_H
#define XPMEM_CGROUP_PATH_H

#include <stdbool.h>
#include <stddef.h>

/* The cgroup's memory.pressure: the first cgroup2 mount's point joined with the "0::" line's cgroup
 * below that mount's root (a container's mount shows only part of the hierarchy). False when there
 * is no v2 cgroup, no cgroup2 mount, the cgroup is outside what the mount shows, or the path does
 * not fit in `capacity`. */
bool cgroup_pressure_path_from(const char *cgroups, const char *mountinfo, char *path, size_t capacity);

#endif
