/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * The main() of the fuzz targets when they are not linked with libFuzzer:
 * runs LLVMFuzzerTestOneInput() once on each file named on the command
 * line, or found (sorted by name) in a directory named there.  This is how
 * the seed corpus and every input that once crashed a target
 * (tests/fuzz/regressions/) run in the normal test suites, with any
 * compiler and under every sanitizer leg, not only in fuzzing builds.
 *
 * Fails when no input was found at all: a replay test that replays nothing
 * would pass without testing anything.
 */

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int
replay_file(const char *path)
{
   FILE *f = fopen(path, "rb");
   if (!f) {
      fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
      return -1;
   }
   uint8_t *buf = NULL;
   size_t len = 0, cap = 0;
   for (;;) {
      if (len == cap) {
         cap = cap ? 2 * cap : 4096;
         uint8_t *n = realloc(buf, cap);
         if (!n) {
            fprintf(stderr, "replay: %s: out of memory\n", path);
            free(buf);
            fclose(f);
            return -1;
         }
         buf = n;
      }
      size_t got = fread(buf + len, 1, cap - len, f);
      len += got;
      if (got == 0)
         break;
   }
   bool bad = ferror(f);
   fclose(f);
   if (bad) {
      fprintf(stderr, "replay: %s: read error\n", path);
      free(buf);
      return -1;
   }
   /* A target finding a defect aborts: the file name is then the last
    * line printed. */
   printf("replay: %s (%zu bytes)\n", path, len);
   fflush(stdout);
   LLVMFuzzerTestOneInput(buf, len);
   free(buf);
   return 0;
}

static int
compare_names(const void *a, const void *b)
{
   return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays every regular file in dir; returns the number, or -1. */
static long
replay_dir(const char *dir)
{
   DIR *d = opendir(dir);
   if (!d) {
      fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
      return -1;
   }
   char **names = NULL;
   size_t count = 0, cap = 0;
   struct dirent *e;
   while ((e = readdir(d))) {
      if (e->d_name[0] == '.')
         continue;
      if (count == cap) {
         cap = cap ? 2 * cap : 64;
         char **n = realloc(names, cap * sizeof(*names));
         if (!n)
            break;
         names = n;
      }
      size_t len = strlen(dir) + strlen(e->d_name) + 2;
      names[count] = malloc(len);
      if (!names[count])
         break;
      snprintf(names[count], len, "%s/%s", dir, e->d_name);
      count++;
   }
   closedir(d);
   if (count)
      qsort(names, count, sizeof(*names), compare_names);
   long done = 0;
   for (size_t i = 0; i < count; i++) {
      struct stat st;
      if (done >= 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
         if (replay_file(names[i]) != 0)
            done = -1;
         else
            done++;
      }
      free(names[i]);
   }
   free(names);
   return done;
}

int
main(int argc, char **argv)
{
   long total = 0;

   LLVMFuzzerInitialize(&argc, &argv);
   for (int i = 1; i < argc; i++) {
      struct stat st;
      long n;
      if (stat(argv[i], &st) != 0) {
         fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
         return 1;
      }
      if (S_ISDIR(st.st_mode))
         n = replay_dir(argv[i]);
      else
         n = replay_file(argv[i]) == 0 ? 1 : -1;
      if (n < 0)
         return 1;
      total += n;
   }
   if (total == 0) {
      fprintf(stderr, "replay: no input found: nothing was tested\n");
      return 1;
   }
   printf("replay: %ld inputs, no defect found\n", total);
   return 0;
}
