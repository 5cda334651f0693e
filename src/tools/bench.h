/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

#ifndef COHMAP_TOOLS_BENCH_H
#define COHMAP_TOOLS_BENCH_H

/* `cohmap bench`: argv[0] is "bench".  Returns the exit status: 0, 1 when
 * a cell failed (a library error or a wrong result) or the environment is
 * missing something, 2 for bad arguments. */
int cohmap_tool_bench(int argc, char **argv);

#endif
