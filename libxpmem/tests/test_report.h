/* One line per check ("ok NAME" / "FAILED NAME: why"), and a last line "N passed, N failed". */
#ifndef XPMEM_TEST_REPORT_H
#define XPMEM_TEST_REPORT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

static int tests_passed, tests_failed;

__attribute__((format(printf, 3, 4), unused))
static bool report(const char *name, bool ok, const char *why_format, ...)
{
    if (ok) {
        printf("ok %s\n", name);
        tests_passed++;
    } else {
        printf("FAILED %s: ", name);
        va_list arguments;
        va_start(arguments, why_format);
        vprintf(why_format, arguments);
        va_end(arguments);
        printf("\n");
        tests_failed++;
    }
    fflush(stdout);
    return ok;
}

__attribute__((unused))
static int report_totals(void)
{
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    return tests_failed == 0 ? 0 : 1;
}

/* A program that cannot even set up (no broker to test with) counts as one failure, and ends. */
__attribute__((unused))
static int report_setup_failure(const char *why)
{
    printf("FAILED setup: %s\n", why);
    tests_failed++;
    return report_totals();
}

#endif
