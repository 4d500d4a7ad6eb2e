#include "shmem_huge.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* PAGEMAP_SCAN's interface (linux/fs.h of Linux 6.7; older headers lack it). */
struct pagemap_scan_region {
    uint64_t start, end, categories;
};
struct pagemap_scan_arguments {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN_REQUEST _IOWR('f', 16, struct pagemap_scan_arguments)
#define PAGEMAP_PAGE_IS_HUGE (UINT64_C(1) << 6)

#define THP_DIRECTORY "/sys/kernel/mm/transparent_hugepage/"

/* Reads a small sysfs file into `text`, NUL-terminated; false when it cannot. */
static bool read_small_file(const char *path, char *text, size_t capacity)
{
    int descriptor = open(path, O_RDONLY | O_CLOEXEC);
    if (descriptor < 0)
        return false;
    ssize_t length = read(descriptor, text, capacity - 1);
    close(descriptor);
    if (length <= 0)
        return false;
    text[length] = '\0';
    return true;
}

/* The bracketed (selected) word of shmem_enabled allows huge pages for a mapping that asks. */
static bool shmem_allows_huge(void)
{
    char text[128];
    if (!read_small_file(THP_DIRECTORY "shmem_enabled", text, sizeof text))
        return false;
    const char *open_bracket = strchr(text, '[');
    const char *close_bracket = open_bracket != NULL ? strchr(open_bracket, ']') : NULL;
    if (close_bracket == NULL)
        return false;
    size_t length = (size_t)(close_bracket - open_bracket - 1);
    static const char *const allowing[] = {"always", "within_size", "advise", "force"};
    for (size_t index = 0; index < sizeof allowing / sizeof allowing[0]; index++)
        if (strlen(allowing[index]) == length && strncmp(open_bracket + 1, allowing[index], length) == 0)
            return true;
    return false;
}

static uint64_t decide(void)
{
    const char *switched = getenv("XPMEM_SHMEM_HUGE");
    if (switched != NULL && strcmp(switched, "0") == 0)
        return 0;
    if (!shmem_allows_huge())
        return 0;
    char text[32];
    if (!read_small_file(THP_DIRECTORY "hpage_pmd_size", text, sizeof text))
        return 0;
    uint64_t size = strtoull(text, NULL, 10);
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    bool power_of_two = size != 0 && (size & (size - 1)) == 0;
    return power_of_two && size > page ? size : 0;
}

uint64_t shmem_huge_page_size(void)
{
    /* Racing first callers decide alike; the answer is one word. */
    static uint64_t decided;
    static int known;
    if (!__atomic_load_n(&known, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&decided, decide(), __ATOMIC_RELAXED);
        __atomic_store_n(&known, 1, __ATOMIC_RELEASE);
    }
    return __atomic_load_n(&decided, __ATOMIC_RELAXED);
}

uint32_t huge_mapped_ranges(int pagemap, uint64_t start, uint64_t end, struct huge_range *ranges, uint32_t capacity)
{
    struct pagemap_scan_region regions[16];
    if (capacity > sizeof regions / sizeof regions[0])
        capacity = sizeof regions / sizeof regions[0];
    struct pagemap_scan_arguments scan = {
        .size = sizeof scan,
        .start = start,
        .end = end,
        .vec = (uint64_t)(uintptr_t)regions,
        .vec_len = capacity,
        .category_mask = PAGEMAP_PAGE_IS_HUGE,
        .return_mask = PAGEMAP_PAGE_IS_HUGE,
    };
    int found = ioctl(pagemap, PAGEMAP_SCAN_REQUEST, &scan);
    if (found <= 0)
        return 0;
    for (int index = 0; index < found; index++) {
        ranges[index].start = regions[index].start;
        ranges[index].end = regions[index].end;
    }
    return (uint32_t)found;
}
