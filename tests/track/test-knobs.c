/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * Environment knobs (docs/envvars.md), good and bad values: the u_debug
 * style parsers (flag lists, choices, numbers, booleans), what context
 * creation does with each knob (COHMAP_DEBUG and COHMAP_METHOD fail with
 * -EINVAL and a message; the policy's thresholds keep their default and
 * say so), the help tables, and COHMAP_PRINT_OPTIONS (once per process,
 * every knob the documentation lists).
 *
 * argv[1]: docs/envvars.md.
 */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "test-util.h"
#include "track/options.h"
#include "track/track_priv.h"
#include "util/debug.h"
#include "util/log.h"

static const char *envvars_md;

/* --- stderr capture ---------------------------------------------------- */

struct capture {
   int saved;
   FILE *file;
};

static void
capture_begin(struct capture *cap)
{
   fflush(stderr);
   cap->file = tmpfile();
   assert_non_null(cap->file);
   cap->saved = dup(STDERR_FILENO);
   assert_true(cap->saved >= 0);
   assert_true(dup2(fileno(cap->file), STDERR_FILENO) >= 0);
}

static void
capture_end(struct capture *cap, char *buf, size_t size)
{
   fflush(stderr);
   dup2(cap->saved, STDERR_FILENO);
   close(cap->saved);
   rewind(cap->file);
   size_t n = fread(buf, 1, size - 1, cap->file);
   buf[n] = '\0';
   fclose(cap->file);
}

static size_t
count(const char *text, const char *what)
{
   size_t n = 0;
   for (const char *p = text; (p = strstr(p, what)); p += strlen(what))
      n++;
   return n;
}

/* --- the parsers ------------------------------------------------------- */

static const struct cohmap_debug_named_value flags_table[] = {
   {"stats", 1, "s"},
   {"verify", 2, "v"},
   {"nocal", 4, "n"},
   COHMAP_DEBUG_NAMED_VALUE_END,
};

static void
test_parse_flags(void **state)
{
   static const struct {
      const char *str;
      uint64_t want;
   } good[] = {
      {"", 0},
      {"stats", 1},
      {"STATS", 1}, /* case does not matter */
      {"Stats,VeRiFy", 3},
      {"stats|verify", 3}, /* the separators */
      {"stats verify", 3},
      {"stats:verify", 3},
      {"stats\tverify", 3},
      {",stats,,verify,", 3},
      {"|||", 0},
      {"stats,stats", 1},
      {"all", 7},
      {"ALL", 7},
      {"nocal|all", 7},
   };
   static const struct {
      const char *str;
      const char *bad;
   } bad[] = {
      {"bogus", "bogus"},
      {"stats,bogus", "bogus"},
      {"stats;verify", "stats;verify"}, /* not a separator */
      {"-stats", "-stats"},
      {"+stats", "+stats"},
      {"stats=1", "stats=1"},
      {"stat", "stat"},
      {"statsverify", "statsverify"},
      {"0", "0"},
      {"verbose\n", "verbose\n"},
   };

   for (size_t i = 0; i < TU_ARRAY_SIZE(good); i++) {
      uint64_t flags = 0xdead;
      bool help = true;
      const char *b = NULL;
      int ret = cohmap_debug_parse_flags("X", good[i].str, flags_table,
                                         &flags, &help, &b);
      if (ret || flags != good[i].want || help) {
         fprintf(stderr, "'%s': ret %d flags %#llx help %d\n", good[i].str,
                 ret, (unsigned long long)flags, help);
         fail();
      }
   }
   for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
      uint64_t flags = 0xdead;
      const char *b = NULL;
      int ret = cohmap_debug_parse_flags("X", bad[i].str, flags_table, &flags,
                                         NULL, &b);
      assert_int_equal(ret, -EINVAL);
      assert_int_equal(flags, 0xdead); /* untouched */
      assert_non_null(b);
      /* The bad name alone, separators excluded. */
      size_t want_len = strcspn(bad[i].bad, COHMAP_DEBUG_SEPARATORS);
      assert_int_equal(strlen(b), want_len);
      assert_memory_equal(b, bad[i].bad, want_len);
   }

   /* Overflow: a very long name is refused and named, truncated. */
   char longname[300];
   memset(longname, 'x', sizeof(longname) - 1);
   longname[sizeof(longname) - 1] = '\0';
   const char *b = NULL;
   uint64_t flags = 0;
   assert_int_equal(
      cohmap_debug_parse_flags("X", longname, flags_table, &flags, NULL, &b),
      -EINVAL);
   assert_non_null(b);
   assert_true(strlen(b) > 10 && strlen(b) < 100);

   /* help prints the table, sets *help and goes on with the other
    * flags. */
   struct capture cap;
   char text[4096];
   bool help = false;
   capture_begin(&cap);
   int ret = cohmap_debug_parse_flags("XVAR", "verify,HELP", flags_table,
                                      &flags, &help, NULL);
   capture_end(&cap, text, sizeof(text));
   assert_int_equal(ret, 0);
   assert_true(help);
   assert_int_equal(flags, 2);
   assert_non_null(strstr(text, "XVAR"));
   assert_non_null(strstr(text, "stats"));
   assert_non_null(strstr(text, "verify"));
   assert_non_null(strstr(text, "all"));
}

static void
test_parse_enum(void **state)
{
   uint64_t v = 99;

   assert_int_equal(cohmap_debug_parse_enum("verify", flags_table, &v), 0);
   assert_int_equal(v, 2);
   assert_int_equal(cohmap_debug_parse_enum("NoCaL", flags_table, &v), 0);
   assert_int_equal(v, 4);
   static const char *const bad[] = {
      "",    " stats", "stats ", "stats,verify", "stats|verify",
      "all", "help",   "st",     "stats\n",      NULL,
   };
   for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
      v = 99;
      assert_int_equal(cohmap_debug_parse_enum(bad[i], flags_table, &v),
                       -EINVAL);
      assert_int_equal(v, 99);
   }
}

static void
test_parse_uint(void **state)
{
   static const struct {
      const char *str;
      uint64_t min, max, want;
   } good[] = {
      {"0", 0, 10, 0},   {"10", 0, 10, 10},
      {"007", 0, 10, 7}, {"18446744073709551615", 0, UINT64_MAX, UINT64_MAX},
      {"5", 5, 5, 5},
   };
   static const struct {
      const char *str;
      uint64_t min, max;
      int err;
   } bad[] = {
      {"", 0, 10, -EINVAL},
      {NULL, 0, 10, -EINVAL},
      {"abc", 0, 10, -EINVAL},
      {"-1", 0, 10, -EINVAL}, /* strtoull would give 2^64 - 1 */
      {"+1", 0, 10, -EINVAL},
      {" 1", 0, 10, -EINVAL},
      {"1 ", 0, 10, -EINVAL},
      {"0x10", 0, 100, -EINVAL},
      {"1e3", 0, 10000, -EINVAL},
      {"2.5", 0, 10, -EINVAL},
      {"12abc", 0, 100, -EINVAL},
      {"11", 0, 10, -ERANGE},
      {"4", 5, 10, -ERANGE},
      {"18446744073709551616", 0, UINT64_MAX, -ERANGE}, /* 2^64 */
      {"99999999999999999999999999", 0, UINT64_MAX, -ERANGE},
   };

   for (size_t i = 0; i < TU_ARRAY_SIZE(good); i++) {
      uint64_t v = 99;
      assert_int_equal(
         cohmap_debug_parse_uint(good[i].str, good[i].min, good[i].max, &v),
         0);
      assert_int_equal(v, good[i].want);
   }
   for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
      uint64_t v = 99;
      int ret =
         cohmap_debug_parse_uint(bad[i].str, bad[i].min, bad[i].max, &v);
      if (ret != bad[i].err || v != 99) {
         fprintf(stderr, "'%s': ret %d, value %llu\n",
                 bad[i].str ? bad[i].str : "(null)", ret,
                 (unsigned long long)v);
         fail();
      }
   }
}

static void
test_parse_bool(void **state)
{
   static const char *const yes[] = {"1", "y",    "yes", "YES",
                                     "t", "True", "on",  "ON"};
   static const char *const no[] = {"0", "n", "No", "f", "FALSE", "off"};
   static const char *const bad[] = {"",     "2",  "maybe", " true", "true ",
                                     "yess", "-1", "onn",   NULL};
   for (size_t i = 0; i < TU_ARRAY_SIZE(yes); i++) {
      bool v = false;
      assert_int_equal(cohmap_debug_parse_bool(yes[i], &v), 0);
      assert_true(v);
   }
   for (size_t i = 0; i < TU_ARRAY_SIZE(no); i++) {
      bool v = true;
      assert_int_equal(cohmap_debug_parse_bool(no[i], &v), 0);
      assert_false(v);
   }
   for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
      bool v = true;
      assert_int_equal(cohmap_debug_parse_bool(bad[i], &v), -EINVAL);
      assert_true(v);
   }
}

/* --- the knobs at context creation -------------------------------------
 */

/* Creates a context with var=value: its return value, the context (NULL
 * on failure) and what it printed. */
static int
create_with(const char *var, const char *value, struct cohmap_context **out,
            char *text, size_t size)
{
   struct capture cap;

   *out = NULL;
   assert_int_equal(setenv(var, value, 1), 0);
   capture_begin(&cap);
   int ret = cohmap_context_create(NULL, out);
   capture_end(&cap, text, size);
   assert_int_equal(unsetenv(var), 0);
   return ret;
}

static void
test_env_debug(void **state)
{
   static const struct {
      const char *value;
      uint64_t want;
   } good[] = {
      {"", 0},
      {"stats", COHMAP_DEBUG_STATS},
      {"VERIFY", COHMAP_DEBUG_VERIFY},
      {"stats,verify", COHMAP_DEBUG_STATS | COHMAP_DEBUG_VERIFY},
      {"stats|Verify|nocal",
       COHMAP_DEBUG_STATS | COHMAP_DEBUG_VERIFY | COHMAP_DEBUG_NOCAL},
      {"all", COHMAP_DEBUG_VERBOSE | COHMAP_DEBUG_STATS | COHMAP_DEBUG_NOCAL |
                 COHMAP_DEBUG_VERIFY},
   };
   static const char *const bad[] = {
      "bogus", "stats,bogus", "verify;stats", "1", "-verbose", "statss",
   };
   char text[8192];
   struct cohmap_context *ctx;

   for (size_t i = 0; i < TU_ARRAY_SIZE(good); i++) {
      int ret =
         create_with("COHMAP_DEBUG", good[i].value, &ctx, text, sizeof(text));
      assert_int_equal(ret, 0);
      if (ctx->debug != good[i].want) {
         fprintf(stderr, "COHMAP_DEBUG='%s': flags %#llx, want %#llx\n",
                 good[i].value, (unsigned long long)ctx->debug,
                 (unsigned long long)good[i].want);
         fail();
      }
      assert_int_equal(cohmap_context_destroy(ctx), 0);
   }
   /* "all" turned verbose on for the process. */
   cohmap_log_set_verbose(false);

   for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
      int ret = create_with("COHMAP_DEBUG", bad[i], &ctx, text, sizeof(text));
      if (ret != -EINVAL || ctx || !strstr(text, "COHMAP_DEBUG") ||
          !strstr(text, "help")) {
         fprintf(stderr, "COHMAP_DEBUG='%s': ret %d, message \"%s\"\n",
                 bad[i], ret, text);
         fail();
      }
      /* The bad name is quoted. */
      char quoted[64];
      snprintf(
         quoted, sizeof(quoted), "'%.*s'",
         (int)strcspn(bad[i] + (strncmp(bad[i], "stats,", 6) ? 0 : 6), ","),
         bad[i] + (strncmp(bad[i], "stats,", 6) ? 0 : 6));
      if (!strstr(text, quoted)) {
         fprintf(stderr, "COHMAP_DEBUG='%s': \"%s\" lacks %s\n", bad[i], text,
                 quoted);
         fail();
      }
   }

   /* help: every flag with a description, then it goes on (like Mesa). */
   int ret = create_with("COHMAP_DEBUG", "help", &ctx, text, sizeof(text));
   assert_int_equal(ret, 0);
   assert_non_null(ctx);
   assert_int_equal(ctx->debug, 0);
   assert_int_equal(cohmap_context_destroy(ctx), 0);
   static const char *const names[] = {"verbose", "stats", "nocal",
                                       "verify",  "all",   "help"};
   for (size_t i = 0; i < TU_ARRAY_SIZE(names); i++) {
      /* "  name   description" on a line of its own. */
      char line[32];
      snprintf(line, sizeof(line), "\n  %s ", names[i]);
      const char *p = strstr(text, line);
      if (!p) {
         fprintf(stderr, "help lacks %s: \"%s\"\n", names[i], text);
         fail();
      }
      p += strlen(line);
      while (*p == ' ')
         p++;
      assert_true(*p && *p != '\n'); /* a description */
   }
   /* help with flags keeps them; the table is printed once per
    * process. */
   ret = create_with("COHMAP_DEBUG", "Help,stats", &ctx, text, sizeof(text));
   assert_int_equal(ret, 0);
   assert_int_equal(ctx->debug, COHMAP_DEBUG_STATS);
   assert_null(strstr(text, "verify"));
   assert_int_equal(cohmap_context_destroy(ctx), 0);
}

static void
test_env_method(void **state)
{
   static const struct {
      const char *value;
      enum cohmap_method want;
      bool allow_fault;
   } good[] = {
      {"auto", COHMAP_METHOD_AUTO, false},
      {"AUTO", COHMAP_METHOD_AUTO, false},
      {"Auto-Fault", COHMAP_METHOD_AUTO, true},
      {"compare", COHMAP_METHOD_COMPARE, false},
      {"Compare", COHMAP_METHOD_COMPARE, false},
      {"FULL", COHMAP_METHOD_FULL, false},
      {"scan", COHMAP_METHOD_SCAN, false},
      {"fault", COHMAP_METHOD_FAULT, false},
      {"", COHMAP_METHOD_AUTO, false}, /* empty means unset */
   };
   static const char *const bad[] = {
      "bogus", "scan,full", "scan|full", " scan",      "scan ",
      "sca",   "all",       "1",         "auto_fault",
   };
   char text[8192];
   struct cohmap_context *ctx;

   for (size_t i = 0; i < TU_ARRAY_SIZE(good); i++) {
      int ret = create_with("COHMAP_METHOD", good[i].value, &ctx, text,
                            sizeof(text));
      assert_int_equal(ret, 0);
      assert_int_equal(ctx->opts.default_method, good[i].want);
      assert_int_equal(ctx->policy.allow_fault, good[i].allow_fault);
      assert_int_equal(ctx->policy.enabled,
                       good[i].want == COHMAP_METHOD_AUTO);
      assert_int_equal(cohmap_context_destroy(ctx), 0);
   }
   for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
      int ret =
         create_with("COHMAP_METHOD", bad[i], &ctx, text, sizeof(text));
      if (ret != -EINVAL || ctx || !strstr(text, "COHMAP_METHOD") ||
          !strstr(text, bad[i])) {
         fprintf(stderr, "COHMAP_METHOD='%s': ret %d, message \"%s\"\n",
                 bad[i], ret, text);
         fail();
      }
   }
   /* help, in any case: the table of choices (once per process), and
    * the default. */
   static const char *const helps[] = {"HELP", "help"};
   for (size_t h = 0; h < TU_ARRAY_SIZE(helps); h++) {
      int ret =
         create_with("COHMAP_METHOD", helps[h], &ctx, text, sizeof(text));
      assert_int_equal(ret, 0);
      assert_int_equal(ctx->opts.default_method, COHMAP_METHOD_AUTO);
      assert_int_equal(cohmap_context_destroy(ctx), 0);
      if (h > 0) {
         assert_null(strstr(text, "COHMAP_METHOD"));
         continue;
      }
      static const char *const names[] = {"auto",  "auto-fault", "scan",
                                          "fault", "compare",    "full"};
      for (size_t i = 0; i < TU_ARRAY_SIZE(names); i++) {
         char line[32];
         snprintf(line, sizeof(line), "\n  %s ", names[i]);
         assert_non_null(strstr(text, line));
      }
      /* A choice, not a list: no "all". */
      assert_null(strstr(text, "\n  all "));
   }
}

static void
test_env_policy(void **state)
{
   struct cohmap_policy_config defaults;
   cohmap_policy_config_init(&defaults);
   static const struct {
      const char *var;
      size_t field;
   } knobs[] = {
      {"COHMAP_POLICY_MARGIN",
       offsetof(struct cohmap_policy_config, margin_pct)},
      {"COHMAP_POLICY_DWELL", offsetof(struct cohmap_policy_config, dwell)},
   };
   static const char *const bad[] = {
      "abc",   "-5",   "-0",
      "0x10",  " 5",   "5 ",
      "+5",    "1001", "99999999999999999999",
      "12abc", "2.5",  "1e2",
      "25%",   "5,6",  "5|6",
   };
   char text[8192];

   for (size_t k = 0; k < TU_ARRAY_SIZE(knobs); k++) {
      uint32_t def;
      memcpy(&def, (const char *)&defaults + knobs[k].field, sizeof(def));
      char def_text[32];
      snprintf(def_text, sizeof(def_text), "default, %u", def);
      for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
         struct cohmap_context *ctx;
         int ret =
            create_with(knobs[k].var, bad[i], &ctx, text, sizeof(text));
         /* A threshold only tunes: creation goes on, the default stays,
          * and the message names the variable, the value and the
          * default. */
         assert_int_equal(ret, 0);
         uint32_t got;
         memcpy(&got, (const char *)&ctx->policy + knobs[k].field,
                sizeof(got));
         assert_int_equal(cohmap_context_destroy(ctx), 0);
         if (got != def || !strstr(text, knobs[k].var) ||
             !strstr(text, bad[i]) || !strstr(text, def_text) ||
             count(text, "cohmap: warning:") != 1) {
            fprintf(stderr, "%s='%s': %u (default %u): \"%s\"\n",
                    knobs[k].var, bad[i], got, def, text);
            fail();
         }
      }
      struct cohmap_context *ctx;
      assert_int_equal(
         create_with(knobs[k].var, "", &ctx, text, sizeof(text)), 0);
      uint32_t got;
      memcpy(&got, (const char *)&ctx->policy + knobs[k].field, sizeof(got));
      assert_int_equal(got, def);
      assert_null(strstr(text, knobs[k].var));
      assert_int_equal(cohmap_context_destroy(ctx), 0);
      assert_int_equal(
         create_with(knobs[k].var, "1000", &ctx, text, sizeof(text)), 0);
      memcpy(&got, (const char *)&ctx->policy + knobs[k].field, sizeof(got));
      assert_int_equal(got, 1000);
      assert_int_equal(cohmap_context_destroy(ctx), 0);
   }
}

/* --- COHMAP_PRINT_OPTIONS ---------------------------------------------- */

/* Runs this program again (the options are printed once per process, so
 * each case needs a fresh one, not a fork) with "--child what", stderr
 * into buf; returns its exit status. */
static int
in_child(const char *what, char *buf, size_t size)
{
   int fds[2];
   assert_int_equal(pipe(fds), 0);
   fflush(NULL);
   pid_t pid = fork();
   assert_true(pid >= 0);
   if (pid == 0) {
      close(fds[0]);
      dup2(fds[1], STDERR_FILENO);
      execl("/proc/self/exe", "test-knobs", "--child", what, (char *)NULL);
      _exit(127);
   }
   close(fds[1]);
   size_t n = 0;
   ssize_t r;
   while ((r = read(fds[0], buf + n, size - 1 - n)) > 0)
      n += (size_t)r;
   buf[n] = '\0';
   close(fds[0]);
   int status;
   assert_int_equal(waitpid(pid, &status, 0), pid);
   return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* The children: two contexts that read the environment, or one that
 * ignores it. */
static int
child_main(const char *what)
{
   struct cohmap_context_options opts;
   cohmap_context_options_init(&opts);
   int n = 2;
   if (strcmp(what, "ignore-env") == 0) {
      opts.flags = COHMAP_CONTEXT_IGNORE_ENV;
      n = 1;
   }
   for (int i = 0; i < n; i++) {
      struct cohmap_context *ctx = NULL;
      if (cohmap_context_create(&opts, &ctx) != 0)
         return 2;
      cohmap_context_destroy(ctx);
   }
   return 0;
}

static void
test_print_options(void **state)
{
   char text[16384];
   struct cohmap_policy_config defaults;
   cohmap_policy_config_init(&defaults);

   assert_int_equal(setenv("COHMAP_POLICY_MARGIN", "40", 1), 0);
   assert_int_equal(setenv("COHMAP_DEBUG", "nocal", 1), 0);
   static const char *const yes[] = {"1", "true", "YES", "on"};
   for (size_t i = 0; i < TU_ARRAY_SIZE(yes); i++) {
      assert_int_equal(setenv("COHMAP_PRINT_OPTIONS", yes[i], 1), 0);
      assert_int_equal(in_child("two-contexts", text, sizeof(text)), 0);
      /* Once per process, though two contexts read the knobs. */
      assert_int_equal(count(text, "COHMAP_PRINT_OPTIONS;"), 1);
      char want[64];
      snprintf(want, sizeof(want), "COHMAP_POLICY_MARGIN='40' (default %u)",
               defaults.margin_pct);
      assert_non_null(strstr(text, want));
      snprintf(want, sizeof(want), "COHMAP_POLICY_DWELL unset (default %u)",
               defaults.dwell);
      assert_non_null(strstr(text, want));
      assert_non_null(strstr(text, "COHMAP_DEBUG='nocal' (default empty)"));
      assert_non_null(strstr(text, "COHMAP_METHOD unset (default auto)"));
      char pw[64];
      snprintf(pw, sizeof(pw), "COHMAP_PRINT_OPTIONS='%s'", yes[i]);
      assert_non_null(strstr(text, pw));
      /* Every line is cohmap's. */
      for (const char *p = text; *p; p = strchr(p, '\n') + 1) {
         assert_memory_equal(p, "cohmap: ", 8);
         if (!strchr(p, '\n'))
            break;
      }
   }
   /* False, unset: nothing. */
   static const char *const no[] = {"0", "false", "OFF"};
   for (size_t i = 0; i < TU_ARRAY_SIZE(no); i++) {
      assert_int_equal(setenv("COHMAP_PRINT_OPTIONS", no[i], 1), 0);
      assert_int_equal(in_child("two-contexts", text, sizeof(text)), 0);
      assert_null(strstr(text, "COHMAP_PRINT_OPTIONS"));
   }
   /* A bad value: one warning per process, no table, creation goes on. */
   assert_int_equal(setenv("COHMAP_PRINT_OPTIONS", "maybe", 1), 0);
   assert_int_equal(in_child("two-contexts", text, sizeof(text)), 0);
   assert_int_equal(count(text, "COHMAP_PRINT_OPTIONS='maybe' ignored"), 1);
   assert_null(strstr(text, "COHMAP_METHOD"));
   /* A context that ignores the environment reads nothing. */
   assert_int_equal(setenv("COHMAP_PRINT_OPTIONS", "1", 1), 0);
   assert_int_equal(in_child("ignore-env", text, sizeof(text)), 0);
   assert_null(strstr(text, "COHMAP_PRINT_OPTIONS"));

   assert_int_equal(unsetenv("COHMAP_PRINT_OPTIONS"), 0);
   assert_int_equal(unsetenv("COHMAP_POLICY_MARGIN"), 0);
   assert_int_equal(setenv("COHMAP_DEBUG", "", 1), 0);
}

/* Every COHMAP_* variable in docs/envvars.md's knob tables (a row's
 * first cell) is in the table COHMAP_PRINT_OPTIONS prints.  A knob table
 * is one whose header is "| variable | values | default | effect |"; the
 * test scripts' variables (COHMAP_BUILD_DIR, …) live in a two-column
 * table, are read by shell scripts and not by the library, so they are
 * not expected in the printed table. */
static void
test_print_options_documented(void **state)
{
   if (!envvars_md) {
      fprintf(stderr, "no docs/envvars.md given\n");
      fail();
   }
   FILE *f = fopen(envvars_md, "r");
   assert_non_null(f);

   char *printed = NULL;
   size_t printed_size = 0;
   FILE *mem = open_memstream(&printed, &printed_size);
   assert_non_null(mem);
   cohmap_options_print(mem);
   fclose(mem);

   char line[4096];
   size_t rows = 0;
   bool knob_table = false;
   while (fgets(line, sizeof(line), f)) {
      if (strncmp(line, "| variable ", 11) == 0) {
         knob_table = strstr(line, "| default |") != NULL;
         continue;
      }
      if (line[0] != '|') {
         knob_table = false; /* a table ends at its first non-row line */
         continue;
      }
      if (!knob_table || strncmp(line, "| `COHMAP_", 10) != 0)
         continue;
      char name[128];
      size_t n = strcspn(line + 3, "`");
      assert_true(n < sizeof(name));
      memcpy(name, line + 3, n);
      name[n] = '\0';
      char key[160];
      snprintf(key, sizeof(key), "   %s", name);
      if (!strstr(printed, key)) {
         fprintf(stderr,
                 "%s is documented in %s but COHMAP_PRINT_OPTIONS does not "
                 "print it: add it to src/track/options.c\n",
                 name, envvars_md);
         fail();
      }
      rows++;
   }
   fclose(f);
   /* The table was found (COHMAP_DEBUG, METHOD, POLICY_*, PRINT_OPTIONS,
    * SIM_*). */
   assert_true(rows >= 8);
   /* And every printed knob is documented: the two lists are one. */
   assert_int_equal(count(printed, "\ncohmap:   COHMAP_"), rows);
   free(printed);
}

int
main(int argc, char **argv)
{
   if (argc == 3 && strcmp(argv[1], "--child") == 0)
      return child_main(argv[2]);
   envvars_md = argc > 1 ? argv[1] : NULL;
   /* The knobs under test must not come from the caller. */
   unsetenv("COHMAP_PRINT_OPTIONS");
   unsetenv("COHMAP_POLICY_MARGIN");
   unsetenv("COHMAP_POLICY_DWELL");
   setenv("COHMAP_DEBUG", "", 1);
   setenv("COHMAP_METHOD", "", 1);

   const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_flags),
      cmocka_unit_test(test_parse_enum),
      cmocka_unit_test(test_parse_uint),
      cmocka_unit_test(test_parse_bool),
      cmocka_unit_test(test_env_debug),
      cmocka_unit_test(test_env_method),
      cmocka_unit_test(test_env_policy),
      cmocka_unit_test(test_print_options),
      cmocka_unit_test(test_print_options_documented),
   };
   return cmocka_run_group_tests(tests, NULL, NULL);
}
