/*
 * Copyright © 2026 The cohmap developers
 * SPDX-License-Identifier: MIT
 */

/*
 * OpenGL 4.4 through zink and the Vulkan layer (suite 'gl').
 *
 * zink backs a GL buffer created with glBufferStorage(MAP_PERSISTENT |
 * MAP_COHERENT) by HOST_COHERENT Vulkan memory and hands the application
 * the Vulkan mapping, so in shadow mode the pointer this program writes is
 * the layer's shadow: every vertex and every compute input reaches
 * lavapipe only if the layer uploads it at zink's vkQueueSubmit, and every
 * compute result reaches the CPU only if the layer merges it when zink
 * observes the fence.  The tests use the two streaming patterns of modern
 * GL engines:
 *
 *   ring     a persistent coherent vertex ring of three segments, fenced
 *            per frame (glFenceSync / glClientWaitSync before a segment is
 *            rewritten); each frame draws its own tile of the framebuffer
 *            with colours derived from the frame number, and every tile is
 *            checked pixel by pixel.  No glFlushMappedBufferRange, no
 *            barrier: COHERENT promises visibility without them.
 *   compute  a compute shader writes every fourth word of a persistent
 *            coherent storage buffer from the word after it, while the CPU
 *            writes the other two words of each group, in the same pages,
 *            with the dispatch in flight; after glClientWaitSync the CPU
 *            reads the results through the mapped pointer and its own
 *            words must have survived (the layer's three-way merge).
 *
 * Usage: test-gl baseline|layer.  'layer' expects the environment to
 * enable the layer (tests/gl/meson.build sets VK_LAYER_PATH,
 * VK_INSTANCE_LAYERS, COHMAP_MODE=shadow) and proves it was in the path:
 * it sets COHMAP_DEBUG=stats and requires the device line the layer prints
 * when zink destroys its device at eglTerminate to report at least one
 * tracked memory (COHMAP_DEBUG gets "stats" added to what it holds).
 * TEST_GL_RING_SECONDS=N makes the ring go on, RING_FRAMES at a time, for
 * N seconds (bin/cohmap-soak).  Output is TAP.  Exit 77 only when this
 * machine has no EGL or no GL 4.4 context even without the layer.
 */

#include <epoxy/egl.h>
#include <epoxy/gl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test-util.h"

extern char **environ;

static int test_count;
static int test_failed;

#define GL_EXPECT(cond, ...)                                                 \
   do {                                                                      \
      if (!(cond)) {                                                         \
         printf("# %s:%d: expected ", __FILE__, __LINE__);                   \
         printf(__VA_ARGS__);                                                \
         printf("\n");                                                       \
         return false;                                                       \
      }                                                                      \
   } while (0)

struct gl {
   EGLDisplay dpy;
   EGLContext ctx;
};

/* Why a context could not be made, for the skip or failure message. */
static char gl_error[256];

static bool
gl_init(struct gl *gl)
{
   gl->dpy = EGL_NO_DISPLAY;
   gl->ctx = EGL_NO_CONTEXT;
   if (!epoxy_has_egl_extension(EGL_NO_DISPLAY,
                                "EGL_MESA_platform_surfaceless")) {
      snprintf(gl_error, sizeof(gl_error),
               "EGL has no EGL_MESA_platform_surfaceless");
      return false;
   }
   gl->dpy = eglGetPlatformDisplayEXT(EGL_PLATFORM_SURFACELESS_MESA,
                                      EGL_DEFAULT_DISPLAY, NULL);
   EGLint major, minor;
   if (gl->dpy == EGL_NO_DISPLAY || !eglInitialize(gl->dpy, &major, &minor)) {
      snprintf(gl_error, sizeof(gl_error),
               "no surfaceless EGL display (error 0x%x)", eglGetError());
      gl->dpy = EGL_NO_DISPLAY;
      return false;
   }
   if (!eglBindAPI(EGL_OPENGL_API)) {
      snprintf(gl_error, sizeof(gl_error), "EGL cannot bind OpenGL");
      return false;
   }
   /* No config: the FBO is the only framebuffer. */
   const EGLint attribs[] = {
      EGL_CONTEXT_MAJOR_VERSION,
      4,
      EGL_CONTEXT_MINOR_VERSION,
      4,
      EGL_CONTEXT_OPENGL_PROFILE_MASK,
      EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT,
      EGL_NONE,
   };
   gl->ctx =
      eglCreateContext(gl->dpy, EGL_NO_CONFIG_KHR, EGL_NO_CONTEXT, attribs);
   if (gl->ctx == EGL_NO_CONTEXT ||
       !eglMakeCurrent(gl->dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, gl->ctx)) {
      snprintf(gl_error, sizeof(gl_error),
               "no OpenGL 4.4 core context (EGL error 0x%x)", eglGetError());
      return false;
   }
   return true;
}

/* Tears everything down: zink destroys its Vulkan device here, which is
 * when the layer prints its stats. */
static void
gl_finish(struct gl *gl)
{
   if (gl->dpy == EGL_NO_DISPLAY)
      return;
   eglMakeCurrent(gl->dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT);
   if (gl->ctx != EGL_NO_CONTEXT)
      eglDestroyContext(gl->dpy, gl->ctx);
   eglTerminate(gl->dpy);
   eglReleaseThread();
   gl->dpy = EGL_NO_DISPLAY;
}

static GLuint
gl_program(const char *vs, const char *fs, const char *cs)
{
   const char *src[3] = {vs, fs, cs};
   const GLenum type[3] = {GL_VERTEX_SHADER, GL_FRAGMENT_SHADER,
                           GL_COMPUTE_SHADER};
   GLuint prog = glCreateProgram();
   for (int i = 0; i < 3; i++) {
      if (!src[i])
         continue;
      GLuint sh = glCreateShader(type[i]);
      glShaderSource(sh, 1, &src[i], NULL);
      glCompileShader(sh);
      GLint ok = 0;
      glGetShaderiv(sh, GL_COMPILE_STATUS, &ok);
      if (!ok) {
         char log[1024];
         glGetShaderInfoLog(sh, sizeof(log), NULL, log);
         printf("# shader compile failed: %s\n", log);
      }
      glAttachShader(prog, sh);
      glDeleteShader(sh);
   }
   glLinkProgram(prog);
   GLint ok = 0;
   glGetProgramiv(prog, GL_LINK_STATUS, &ok);
   if (!ok) {
      char log[1024];
      glGetProgramInfoLog(prog, sizeof(log), NULL, log);
      printf("# program link failed: %s\n", log);
      glDeleteProgram(prog);
      return 0;
   }
   return prog;
}

/* Waits for a fence the way a streaming engine does: flush once, then
 * wait without a flush. */
static bool
fence_wait(GLsync fence)
{
   GLenum r = glClientWaitSync(fence, GL_SYNC_FLUSH_COMMANDS_BIT,
                               10ull * 1000 * 1000 * 1000);
   glDeleteSync(fence);
   return r == GL_ALREADY_SIGNALED || r == GL_CONDITION_SATISFIED;
}

/* --- ring: persistent coherent vertex ring ------------------------------ */

#define RING_FB            256 /* framebuffer side, pixels */
#define RING_TILE          32  /* one frame's tile */
#define RING_TILES_PER_ROW (RING_FB / RING_TILE)
#define RING_TILES         (RING_TILES_PER_ROW * RING_TILES_PER_ROW)
#define RING_FRAMES        (3 * RING_TILES) /* three full framebuffers */
#define RING_SEGMENTS      3
#define RING_QUADS         4 /* 2x2 sub-tiles per frame */

struct ring_vertex {
   float x, y;
   uint8_t rgba[4];
};

/* A segment is large (48 KiB) and each frame writes its vertices at a
 * frame-dependent place in it, so that the writes wander over pages. */
#define RING_SEGMENT_VERTICES   4096
#define RING_VERTICES_PER_FRAME (RING_QUADS * 6)

static void
ring_color(unsigned frame, unsigned quad, uint8_t rgba[4])
{
   uint32_t h = (frame * 2654435761u) ^ (quad * 40503u + 0x9e37u);
   h ^= h >> 15;
   h *= 2246822519u;
   h ^= h >> 13;
   /* Multiples of 4 stay exact through unorm8 -> float -> unorm8. */
   rgba[0] = (uint8_t)(h & 0xfc);
   rgba[1] = (uint8_t)((h >> 8) & 0xfc);
   rgba[2] = (uint8_t)((h >> 16) & 0xfc);
   rgba[3] = 255;
}

static bool
ring_check_tiles(unsigned first_frame)
{
   static uint8_t pixels[RING_FB * RING_FB * 4];
   glReadPixels(0, 0, RING_FB, RING_FB, GL_RGBA, GL_UNSIGNED_BYTE, pixels);
   for (unsigned t = 0; t < RING_TILES; t++) {
      unsigned tx = t % RING_TILES_PER_ROW, ty = t / RING_TILES_PER_ROW;
      for (unsigned q = 0; q < RING_QUADS; q++) {
         uint8_t want[4];
         ring_color(first_frame + t, q, want);
         unsigned qx = tx * RING_TILE + (q & 1) * RING_TILE / 2;
         unsigned qy = ty * RING_TILE + (q >> 1) * RING_TILE / 2;
         /* Every pixel of the quad but its border row and column. */
         for (unsigned y = qy + 1; y < qy + RING_TILE / 2 - 1; y++) {
            for (unsigned x = qx + 1; x < qx + RING_TILE / 2 - 1; x++) {
               const uint8_t *p = &pixels[(y * RING_FB + x) * 4];
               GL_EXPECT(!memcmp(p, want, 4),
                         "frame %u quad %u pixel (%u,%u) = %02x%02x%02x%02x, "
                         "not %02x%02x%02x%02x",
                         first_frame + t, q, x, y, p[0], p[1], p[2], p[3],
                         want[0], want[1], want[2], want[3]);
            }
         }
      }
   }
   return true;
}

/* TEST_GL_RING_SECONDS: true while the ring should go on. */
static bool
ring_more(void)
{
   static double deadline = -1;
   struct timespec ts;
   clock_gettime(CLOCK_MONOTONIC, &ts);
   double now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
   if (deadline < 0) {
      const char *v = getenv("TEST_GL_RING_SECONDS");
      deadline = now + (v ? strtod(v, NULL) : 0);
   }
   return now < deadline;
}

static bool
test_ring(void)
{
   static const char *vs =
      "#version 440 core\n"
      "layout(location = 0) in vec2 pos;\n"
      "layout(location = 1) in vec4 color;\n"
      "out vec4 v_color;\n"
      "void main() { gl_Position = vec4(pos, 0.0, 1.0); v_color = color; }\n";
   static const char *fs = "#version 440 core\n"
                           "in vec4 v_color;\n"
                           "out vec4 frag;\n"
                           "void main() { frag = v_color; }\n";
   GLuint prog = gl_program(vs, fs, NULL);
   GL_EXPECT(prog, "the ring program to link");

   GLuint tex, fbo;
   glGenTextures(1, &tex);
   glBindTexture(GL_TEXTURE_2D, tex);
   glTexStorage2D(GL_TEXTURE_2D, 1, GL_RGBA8, RING_FB, RING_FB);
   glGenFramebuffers(1, &fbo);
   glBindFramebuffer(GL_FRAMEBUFFER, fbo);
   glFramebufferTexture2D(GL_FRAMEBUFFER, GL_COLOR_ATTACHMENT0, GL_TEXTURE_2D,
                          tex, 0);
   GL_EXPECT(glCheckFramebufferStatus(GL_FRAMEBUFFER) ==
                GL_FRAMEBUFFER_COMPLETE,
             "a complete framebuffer");

   const GLbitfield flags = GL_MAP_PERSISTENT_BIT | GL_MAP_COHERENT_BIT |
                            GL_MAP_WRITE_BIT | GL_MAP_READ_BIT;
   const GLsizeiptr seg_bytes =
      RING_SEGMENT_VERTICES * (GLsizeiptr)sizeof(struct ring_vertex);
   GLuint vao, vbo;
   glGenVertexArrays(1, &vao);
   glBindVertexArray(vao);
   glGenBuffers(1, &vbo);
   glBindBuffer(GL_ARRAY_BUFFER, vbo);
   glBufferStorage(GL_ARRAY_BUFFER, RING_SEGMENTS * seg_bytes, NULL, flags);
   struct ring_vertex *ring =
      glMapBufferRange(GL_ARRAY_BUFFER, 0, RING_SEGMENTS * seg_bytes, flags);
   GL_EXPECT(ring, "a persistent coherent mapping (GL error 0x%x)",
             glGetError());
   glVertexAttribPointer(0, 2, GL_FLOAT, GL_FALSE, sizeof(struct ring_vertex),
                         (void *)0);
   glVertexAttribPointer(1, 4, GL_UNSIGNED_BYTE, GL_TRUE,
                         sizeof(struct ring_vertex),
                         (void *)offsetof(struct ring_vertex, rgba));
   glEnableVertexAttribArray(0);
   glEnableVertexAttribArray(1);
   glUseProgram(prog);
   glViewport(0, 0, RING_FB, RING_FB);
   glClearColor(0, 0, 0, 0);
   glClear(GL_COLOR_BUFFER_BIT);

   GLsync fences[RING_SEGMENTS] = {0};
   bool ok = true;
   unsigned frames = RING_FRAMES;
   ring_more(); /* starts the clock */
   for (unsigned f = 0; f < frames && ok; f++) {
      if (f + 1 == frames && ring_more())
         frames += RING_FRAMES;
      unsigned s = f % RING_SEGMENTS;
      if (fences[s]) {
         ok = fence_wait(fences[s]);
         fences[s] = 0;
         if (!ok)
            printf("# frame %u: glClientWaitSync failed\n", f);
      }
      /* Wander: frame f writes at a different offset of its segment. */
      unsigned first =
         s * RING_SEGMENT_VERTICES +
         (f * 97u) % (RING_SEGMENT_VERTICES - RING_VERTICES_PER_FRAME);
      struct ring_vertex *v = ring + first;
      unsigned t = f % RING_TILES;
      float tile = 2.0f / RING_TILES_PER_ROW;
      for (unsigned q = 0; q < RING_QUADS; q++) {
         float x0 =
            -1.0f + (t % RING_TILES_PER_ROW) * tile + (q & 1) * tile / 2;
         float y0 =
            -1.0f + (t / RING_TILES_PER_ROW) * tile + (q >> 1) * tile / 2;
         float x1 = x0 + tile / 2, y1 = y0 + tile / 2;
         const float corner[6][2] = {{x0, y0}, {x1, y0}, {x1, y1},
                                     {x0, y0}, {x1, y1}, {x0, y1}};
         uint8_t rgba[4];
         ring_color(f, q, rgba);
         for (int c = 0; c < 6; c++) {
            v[q * 6 + c].x = corner[c][0];
            v[q * 6 + c].y = corner[c][1];
            memcpy(v[q * 6 + c].rgba, rgba, 4);
         }
      }
      glDrawArrays(GL_TRIANGLES, (GLint)first, RING_VERTICES_PER_FRAME);
      fences[s] = glFenceSync(GL_SYNC_GPU_COMMANDS_COMPLETE, 0);
      /* A full framebuffer of tiles: check them all. */
      if (t == RING_TILES - 1) {
         ok = ring_check_tiles(f + 1 - RING_TILES);
         if (ok)
            printf("# ring: frames %u-%u rendered right\n",
                   f + 1 - RING_TILES, f);
      }
   }
   for (unsigned s = 0; s < RING_SEGMENTS; s++)
      if (fences[s])
         fence_wait(fences[s]);
   printf("# ring: %u frames\n", frames);

   GLenum err = glGetError();
   glUnmapBuffer(GL_ARRAY_BUFFER);
   glDeleteBuffers(1, &vbo);
   glDeleteVertexArrays(1, &vao);
   glDeleteFramebuffers(1, &fbo);
   glDeleteTextures(1, &tex);
   glDeleteProgram(prog);
   GL_EXPECT(ok, "every frame's tile in its colours");
   GL_EXPECT(err == GL_NO_ERROR, "no GL error, not 0x%x", err);
   return true;
}

/* --- compute: GPU writes read back through the coherent pointer --------- */

#define COMPUTE_GROUPS 16384 /* 4 words each: 256 KiB */
#define COMPUTE_ROUNDS 12

static bool
test_compute(void)
{
   /* Group i: word 0 = word 1 * 3 + round (GPU); words 2, 3 belong to
    * the CPU, which rewrites them while the dispatch runs. */
   static const char *cs =
      "#version 440 core\n"
      "layout(local_size_x = 64) in;\n"
      "layout(std430, binding = 0) buffer Data { uint v[]; };\n"
      "uniform uint round_no;\n"
      "void main() {\n"
      "   uint i = gl_GlobalInvocationID.x;\n"
      "   v[4u * i] = v[4u * i + 1u] * 3u + round_no;\n"
      "}\n";
   GLuint prog = gl_program(NULL, NULL, cs);
   GL_EXPECT(prog, "the compute program to link");

   const GLbitfield flags = GL_MAP_PERSISTENT_BIT | GL_MAP_COHERENT_BIT |
                            GL_MAP_WRITE_BIT | GL_MAP_READ_BIT;
   const GLsizeiptr bytes = COMPUTE_GROUPS * 4 * sizeof(uint32_t);
   GLuint ssbo;
   glGenBuffers(1, &ssbo);
   glBindBuffer(GL_SHADER_STORAGE_BUFFER, ssbo);
   glBufferStorage(GL_SHADER_STORAGE_BUFFER, bytes, NULL, flags);
   volatile uint32_t *v =
      glMapBufferRange(GL_SHADER_STORAGE_BUFFER, 0, bytes, flags);
   GL_EXPECT(v, "a persistent coherent mapping (GL error 0x%x)",
             glGetError());
   glBindBufferBase(GL_SHADER_STORAGE_BUFFER, 0, ssbo);
   glUseProgram(prog);
   GLint round_loc = glGetUniformLocation(prog, "round_no");

   struct tu_rng rng;
   tu_rng_seed(&rng, tu_seed_for("gl-compute"));
   bool ok = true;
   for (uint32_t round = 0; round < COMPUTE_ROUNDS && ok; round++) {
      for (unsigned i = 0; i < COMPUTE_GROUPS; i++) {
         v[4 * i] = 0xdeadbeef; /* the GPU must overwrite it */
         v[4 * i + 1] = (uint32_t)tu_rng_next(&rng);
      }
      glUniform1ui(round_loc, round);
      glDispatchCompute(COMPUTE_GROUPS / 64, 1, 1);
      /* Shader stores reach a client mapping after this barrier. */
      glMemoryBarrier(GL_CLIENT_MAPPED_BUFFER_BARRIER_BIT);
      GLsync fence = glFenceSync(GL_SYNC_GPU_COMMANDS_COMPLETE, 0);
      glFlush();
      /* The dispatch may be running: the CPU's words, same pages. */
      for (unsigned i = 0; i < COMPUTE_GROUPS; i++) {
         v[4 * i + 2] = round * 0x10001u + i;
         v[4 * i + 3] = ~(round * 0x10001u + i);
      }
      if (!fence_wait(fence)) {
         printf("# round %u: glClientWaitSync failed\n", round);
         ok = false;
         break;
      }
      unsigned bad = 0, first_bad = 0;
      for (unsigned i = 0; i < COMPUTE_GROUPS; i++) {
         uint32_t in = v[4 * i + 1];
         bool good = v[4 * i] == in * 3u + round &&
                     v[4 * i + 2] == round * 0x10001u + i &&
                     v[4 * i + 3] == ~(round * 0x10001u + i);
         if (!good && bad++ == 0)
            first_bad = i;
      }
      if (bad) {
         unsigned i = first_bad;
         printf("# round %u: %u of %u groups wrong; group %u: "
                "%08" PRIx32 " %08" PRIx32 " %08" PRIx32 " %08" PRIx32 "\n",
                round, bad, COMPUTE_GROUPS, i, v[4 * i], v[4 * i + 1],
                v[4 * i + 2], v[4 * i + 3]);
         ok = false;
      }
   }
   if (ok)
      printf("# compute: %u rounds of %u groups read back right\n",
             COMPUTE_ROUNDS, COMPUTE_GROUPS);
   GLenum err = glGetError();
   glUnmapBuffer(GL_SHADER_STORAGE_BUFFER);
   glDeleteBuffers(1, &ssbo);
   glDeleteProgram(prog);
   GL_EXPECT(ok, "every GPU result and every CPU word in the mapping");
   GL_EXPECT(err == GL_NO_ERROR, "no GL error, not 0x%x", err);
   return true;
}

/* --- the layer in the path ---------------------------------------------- */

/* Runs this program again as "probe" without the layer: true when GL 4.4
 * works there, i.e. when the layer is what broke it here. */
static bool
baseline_works(void)
{
   char self[4096];
   ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
   if (n <= 0)
      return false;
   self[n] = '\0';
   unsetenv("VK_INSTANCE_LAYERS");
   char *argv[] = {self, "probe", NULL};
   pid_t pid;
   int status;
   if (posix_spawn(&pid, self, NULL, NULL, argv, environ) != 0 ||
       waitpid(pid, &status, 0) != pid)
      return false;
   return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* The first "<N> memories tracked" in the layer's device line, or -1. */
static long
memories_tracked(const char *text)
{
   const char *p = strstr(text, "cohmap: vulkan: device ");
   if (!p || !(p = strstr(p, "): ")))
      return -1;
   char *end;
   long n = strtol(p + 3, &end, 10);
   return strncmp(end, " memories tracked", 17) ? -1 : n;
}

static void
report(const char *name, bool ok)
{
   test_count++;
   if (!ok)
      test_failed++;
   printf("%s %d - %s\n", ok ? "ok" : "not ok", test_count, name);
   fflush(stdout);
}

int
main(int argc, char **argv)
{
   const char *config = argc > 1 ? argv[1] : "";
   bool layer = !strcmp(config, "layer");
   if (!layer && strcmp(config, "baseline") && strcmp(config, "probe")) {
      fprintf(stderr, "usage: test-gl baseline|layer\n");
      return 2;
   }
   if (!strcmp(config, "probe")) {
      struct gl gl;
      bool ok = gl_init(&gl);
      gl_finish(&gl);
      return ok ? 0 : 1;
   }

   /* The layer's output goes to stderr; keep it to look for the device
    * line, and show it afterwards as TAP comments. */
   FILE *captured = NULL;
   int saved_stderr = -1;
   if (layer) {
      /* Kept: bin/cohmap-soak adds verify. */
      const char *debug = getenv("COHMAP_DEBUG");
      char flags[256];
      snprintf(flags, sizeof(flags), "%.200s%sstats", debug ? debug : "",
               debug && *debug ? "," : "");
      setenv("COHMAP_DEBUG", flags, 1);
      fflush(stderr);
      captured = tmpfile();
      saved_stderr = dup(2);
      if (!captured || saved_stderr < 0) {
         printf("Bail out! cannot capture stderr\n");
         return 1;
      }
      dup2(fileno(captured), 2);
   }

   struct gl gl;
   bool have_gl = gl_init(&gl);
   /* Copied: the string dies with the context. */
   char renderer[256] = "";
   printf("TAP version 13\n");
   if (have_gl) {
      snprintf(renderer, sizeof(renderer), "%s",
               (const char *)glGetString(GL_RENDERER));
      printf("# %s, %s\n", renderer, glGetString(GL_VERSION));
      report("ring", test_ring());
      report("compute", test_compute());
   }
   gl_finish(&gl);

   char *text = NULL;
   if (layer) {
      fflush(stderr);
      dup2(saved_stderr, 2);
      close(saved_stderr);
      long n = ftell(captured);
      text = calloc(1, n > 0 ? (size_t)n + 1 : 1);
      rewind(captured);
      if (text && n > 0 && fread(text, 1, (size_t)n, captured) != (size_t)n)
         text[0] = '\0';
      fclose(captured);
      for (const char *line = text ? text : ""; *line;) {
         size_t len = strcspn(line, "\n");
         printf("# stderr: %.*s\n", (int)len, line);
         line += len + (line[len] == '\n');
      }
   }

   if (!have_gl) {
      printf("# %s\n", gl_error);
      if (!layer || !baseline_works()) {
         printf("1..0 # SKIP no OpenGL 4.4 on EGL here: %s\n", gl_error);
         free(text);
         return TU_EXIT_SKIP;
      }
      printf("# GL 4.4 works without the layer but not with it\n");
      report("context through the layer", false);
   } else if (layer) {
      long tracked = text ? memories_tracked(text) : -1;
      printf("# renderer '%s', %ld memories tracked\n", renderer, tracked);
      report("layer in the path (stats: memories tracked > 0)", tracked > 0);
   }
   free(text);
   printf("1..%d\n", test_count);
   return test_failed ? 1 : 0;
}
