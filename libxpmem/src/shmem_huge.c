#include "shmem_huge.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "private_area.h"

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

/* The bracketed (selected) word of a THP setting file into `word`; false when unreadable. */
static bool selected_word(const char *path, char *word, size_t capacity)
{
    char text[128];
    if (!read_small_file(path, text, sizeof text))
        return false;
    const char *open_bracket = strchr(text, '[');
    const char *close_bracket = open_bracket != NULL ? strchr(open_bracket, ']') : NULL;
    size_t length = close_bracket != NULL ? (size_t)(close_bracket - open_bracket - 1) : 0;
    if (close_bracket == NULL || length >= capacity)
        return false;
    memcpy(word, open_bracket + 1, length);
    word[length] = '\0';
    return true;
}

static bool allows_huge(const char *word)
{
    return strcmp(word, "always") == 0 || strcmp(word, "within_size") == 0 || strcmp(word, "advise") == 0
           || strcmp(word, "force") == 0;
}

/* Whether shmem may have huge pages of `size` bytes for a mapping that asks: the per-size setting
 * (Linux 6.11+) decides unless it says `inherit` or is absent; then the global one. */
static bool shmem_allows_huge(uint64_t size)
{
    char path[128], word[32];
    snprintf(path, sizeof path, THP_DIRECTORY "hugepages-%llukB/shmem_enabled", (unsigned long long)(size >> 10));
    if (selected_word(path, word, sizeof word) && strcmp(word, "inherit") != 0)
        return allows_huge(word);
    return selected_word(THP_DIRECTORY "shmem_enabled", word, sizeof word) && allows_huge(word);
}

/* Whether the kernel has PAGEMAP_SCAN (Linux 6.7+): a scan of one page of our own data answers. */
static bool pagemap_scan_works(void)
{
    static uint8_t probe[1];
    int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pagemap < 0)
        return false;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t start = (uint64_t)(uintptr_t)probe & ~(page - 1);
    struct pagemap_scan_region regions[1];
    struct pagemap_scan_arguments scan = {.size = sizeof scan, .start = start, .end = start + page,
                                          .vec = (uint64_t)(uintptr_t)regions, .vec_len = 1,
                                          .category_mask = PAGEMAP_PAGE_IS_HUGE, .return_mask = PAGEMAP_PAGE_IS_HUGE};
    bool works = ioctl(pagemap, PAGEMAP_SCAN_REQUEST, &scan) >= 0;
    close(pagemap);
    return works;
}

static uint64_t decide(void)
{
    const char *switched = getenv("XPMEM_SHMEM_HUGE");
    if (switched != NULL && strcmp(switched, "0") == 0)
        return 0;
    char text[32];
    if (!read_small_file(THP_DIRECTORY "hpage_pmd_size", text, sizeof text))
        return 0;
    uint64_t size = strtoull(text, NULL, 10);
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    /* Backing looks for huge pages one chunk at a time: a larger one (512 MiB with 64 KiB base
     * pages) never fits. */
    bool usable = size != 0 && (size & (size - 1)) == 0 && size > page && size <= PAGEMAP_CHUNK_PAGES * page;
    return usable && shmem_allows_huge(size) && pagemap_scan_works() ? size : 0;
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
