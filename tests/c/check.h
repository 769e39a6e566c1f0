/* Tiny assertion helpers shared by the C tests of ember's ABI. */
#ifndef EMBER_TEST_CHECK_H
#define EMBER_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"

static int g_checks = 0;
static int g_failures = 0;

/* The call must return `want`; a failure must leave a message, a success none. */
#define EXPECT(call, want)                                                                   \
    do {                                                                                     \
        ember_status st_ = (call);                                                           \
        ember_status want_ = (want);                                                         \
        const char *msg_ = ember_last_error();                                               \
        g_checks++;                                                                          \
        if (st_ != want_) {                                                                  \
            fprintf(stderr, "%s:%d: %s\n  returned %s (%s), expected %s\n", __FILE__,        \
                    __LINE__, #call, ember_status_name(st_), msg_, ember_status_name(want_)); \
            g_failures++;                                                                    \
        } else if (msg_ == NULL || (st_ == EMBER_OK) != (msg_[0] == '\0')) {                 \
            fprintf(stderr, "%s:%d: %s: last error \"%s\" does not match status %s\n",       \
                    __FILE__, __LINE__, #call, msg_ ? msg_ : "(NULL)",                        \
                    ember_status_name(st_));                                                 \
            g_failures++;                                                                    \
        }                                                                                    \
    } while (0)

#define OK(call) EXPECT(call, EMBER_OK)

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        g_checks++;                                                                          \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);         \
            g_failures++;                                                                    \
        }                                                                                    \
    } while (0)

/* Stops the test when a step everything after depends on fails. */
#define REQUIRE(cond)                                                                        \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: required: %s (last error: %s)\n", __FILE__, __LINE__,     \
                    #cond, ember_last_error());                                              \
            exit(2);                                                                         \
        }                                                                                    \
    } while (0)

static int report(const char *name) {
    printf("%s: %d passed, %d failed\n", name, g_checks - g_failures, g_failures);
    return g_failures == 0 ? 0 : 1;
}

#endif
