/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * ThreadSanitizer annotations for the one data race cohmap has by design:
 * the application may store to tracked memory at any time, also while
 * cohmap reads that memory (a collect diffing it against the snapshot, an
 * upload copying it to the device).  cohmap.h promises that no such store
 * is lost -- a store that lands after the read differs from the snapshot,
 * or stays dirty, and is reported by the next collect -- so the race is
 * benign, and it is the application's memory, not cohmap's state.
 *
 * Under TSan these reads, and the merge's compare-and-swaps into the
 * mapping (which race with application stores the same way, and never
 * overwrite one), are excluded from race detection: a suppression would
 * do too, but TSan still builds a report per racy address before it
 * matches one, which made the concurrency tests 50x slower still.  The
 * window covers only the access to application memory: cohmap's own
 * state is written outside it or under locks TSan does see.  Without TSan
 * the macros are empty.
 */

#ifndef COHMAP_UTIL_TSAN_H
#define COHMAP_UTIL_TSAN_H

#if defined(__SANITIZE_THREAD__)
#define COHMAP_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define COHMAP_TSAN 1
#endif
#endif

#ifdef COHMAP_TSAN
/* The TSan runtime's dynamic annotations (tsan_interface_ann.cpp). */
__attribute__((visibility("default"))) void
AnnotateIgnoreReadsBegin(const char *file, int line);
__attribute__((visibility("default"))) void
AnnotateIgnoreReadsEnd(const char *file, int line);
#define COHMAP_APP_MEMORY_READ_BEGIN()                                       \
   AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define COHMAP_APP_MEMORY_READ_END() AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
#else
#define COHMAP_APP_MEMORY_READ_BEGIN() ((void)0)
#define COHMAP_APP_MEMORY_READ_END() ((void)0)
#endif

#endif
