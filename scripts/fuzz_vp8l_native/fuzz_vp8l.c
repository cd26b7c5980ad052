/*
 * Fuzz harness for app/engine/native/vp8l.c: memory safety (built with
 * AddressSanitizer and UBSan) and agreement with libwebp's WebPDecode.
 *
 * Each input is a VP8L payload (what app.engine.vp8l.stream hands the decoder).
 * It is decoded
 *   - in an arena of exactly app.engine.vp8l.arena_bytes (a heap block of that
 *     size, so a write past it is reported), rows asked for in bands of a size
 *     picked from the input's hash, RGBA or RGB;
 *   - again in an arena one to a few hundred bytes smaller than what the first
 *     run used: that must fail with -2 (never write past it);
 *   - by libwebp (WebPDecodeRGBAInto on the payload wrapped in a RIFF): both must
 *     fail or both succeed with the same pixels.
 * Any difference aborts, so libFuzzer keeps the input.
 *
 * The decoder is #included, so the harness can read its arena use.
 * Images over 1 M pixels (FUZZ_MAX_PIXELS) are only opened (their rows would be slow to fuzz).
 */

#include <dlfcn.h>
#include <sanitizer/asan_interface.h>
#include <sys/mman.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../app/engine/native/vp8l.c"

static int64_t max_pixels = 1 << 20; /* FUZZ_MAX_PIXELS overrides */

typedef uint8_t* (*decode_into_fn)(const uint8_t*, size_t, uint8_t*, size_t, int);
static decode_into_fn webp_decode_into;

static void load_libwebp(void) {
  const char* path = getenv("LIBWEBP");
  void* lib = dlopen(path ? path : "libwebp.so.7", RTLD_NOW);
  if (!lib) {
    fprintf(stderr, "no libwebp (set LIBWEBP): %s\n", dlerror());
    abort();
  }
  webp_decode_into = (decode_into_fn)dlsym(lib, "WebPDecodeRGBAInto");
  if (!webp_decode_into) abort();
}

/* app.engine.vp8l.arena_bytes, the same arithmetic */
static size_t arena_bytes(int64_t width, int64_t height, int64_t max_rows) {
  int64_t blocks = ((width + 3) / 4) * ((height + 3) / 4);
  int64_t window = 7 * width + 8 > 1048456 ? 7 * width + 8 : 1048456;
  int64_t cap1 = width * height + 4096 + 1;
  int64_t cap2 = 2 * window + (max_rows + 1) * width + 2 * 4096;
  int64_t cap = cap1 < cap2 ? cap1 : cap2;
  return (size_t)(512 * 1024 + 3 * 4 * blocks + 4 * 65536 + 1024 + 4 * cap + 3 * 4 * width +
                  24 * 1024 * 1024);
}

/* The full-size arena: one mapping reused (its stale bytes stay, so a read of
 * arena bytes the decoder never wrote shows up as a difference), with 4 KB past
 * its end poisoned for AddressSanitizer. A fresh heap block per input cost most
 * of the time (page faults of a 25 MB block). */
#define REGION (512u << 20)
static uint8_t* region;

static uint8_t* arena_get(size_t len) {
  if (!region) {
    region = (uint8_t*)mmap(NULL, REGION + 8192, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED) abort();
  }
  if (len > REGION) return NULL;
  ASAN_UNPOISON_MEMORY_REGION(region + 4096, len);
  ASAN_POISON_MEMORY_REGION(region + 4096 + len, 4096);
  return region + 4096;
}

static void arena_put(uint8_t* arena, size_t len) {
  if (arena == region + 4096) ASAN_UNPOISON_MEMORY_REGION(arena + len, 4096);
  else free(arena);
}

static uint32_t hash(const uint8_t* p, size_t n) {
  uint32_t h = 2166136261u;
  while (n--) h = (h ^ *p++) * 16777619u;
  return h;
}

static void fail(const char* what, int a, int b) {
  fprintf(stderr, "DEFECT: %s (%d, %d)\n", what, a, b);
  abort();
}

/* Decodes all rows; returns the status of the first failure, or the row count. */
static int decode(const uint8_t* data, size_t len, size_t arena_len, int max_rows, int bands,
                  int ask, uint8_t* out, int* open_status, size_t* used, int heap) {
  uint8_t* arena = heap ? (uint8_t*)malloc(arena_len ? arena_len : 1) : arena_get(arena_len);
  int32_t info[3];
  int r, rows = 0, height;
  *open_status = r = vp8l_open(data, len, arena, arena_len, max_rows, info);
  if (r != 0) {
    arena_put(arena, arena_len);
    return r;
  }
  *used = ((Dec*)arena)->arena.used;
  height = info[1];
  if (out) {
    uint8_t* band = (uint8_t*)malloc((size_t)max_rows * (size_t)info[0] * (size_t)bands);
    for (;;) {
      r = vp8l_rows(arena, band, bands, ask);
      if (r < 0) break;
      if (r == 0) {
        if (rows != height) fail("rows ended early", rows, height);
        r = vp8l_rows(arena, band, bands, ask);
        if (r != 0) fail("rows after the end", r, 0);
        r = rows;
        break;
      }
      if (r > ask || r > max_rows) fail("more rows than asked", r, ask);
      memcpy(out + (size_t)rows * (size_t)info[0] * (size_t)bands, band,
             (size_t)r * (size_t)info[0] * (size_t)bands);
      rows += r;
    }
    free(band);
  }
  arena_put(arena, arena_len);
  return r;
}

int LLVMFuzzerTestOneInput(const uint8_t* input, size_t size) {
  static const int kRows[8] = {1, 2, 3, 7, 8, 64, 0, 0};
  uint8_t *file, *ours, *ref, *payload;
  size_t len = size + (size & 1), flen = 20 + len, used = 0, used2 = 0;
  uint32_t h = hash(input, size);
  int width, height, max_rows, bands, ask, open1, open2, r, ok_ref;
  int64_t pixels;
  if (!webp_decode_into) {
    load_libwebp();
    if (getenv("FUZZ_MAX_PIXELS")) max_pixels = atoll(getenv("FUZZ_MAX_PIXELS"));
  }
  if (size < 5 || input[0] != 0x2f) return 0;
  {
    uint32_t bits = (uint32_t)input[1] | (uint32_t)input[2] << 8 | (uint32_t)input[3] << 16 |
                    (uint32_t)input[4] << 24;
    width = (int)(bits & 0x3fff) + 1;
    height = (int)((bits >> 14) & 0x3fff) + 1;
  }
  pixels = (int64_t)width * height;
  if (pixels > ((int64_t)1 << 24)) return 0; /* the arena alone is over 90 MB */
  /* what libwebp reads: the payload to the end of the file, with the pad byte */
  file = (uint8_t*)calloc(1, flen);
  memcpy(file, "RIFF", 4);
  file[4] = (uint8_t)(flen - 8);
  file[5] = (uint8_t)((flen - 8) >> 8);
  file[6] = (uint8_t)((flen - 8) >> 16);
  file[7] = (uint8_t)((flen - 8) >> 24);
  memcpy(file + 8, "WEBPVP8L", 8);
  file[16] = (uint8_t)size;
  file[17] = (uint8_t)(size >> 8);
  file[18] = (uint8_t)(size >> 16);
  file[19] = (uint8_t)(size >> 24);
  memcpy(file + 20, input, size);
  payload = file + 20;

  max_rows = kRows[h & 7];
  if (max_rows == 0) max_rows = 2 * 1024 * 1024 / (width * 4) > 0 ? 2 * 1024 * 1024 / (width * 4) : 1;
  if (max_rows > height) max_rows = height;
  bands = (h >> 3) & 1 ? 3 : 4;
  ask = (h >> 4) & 1 ? max_rows : 1 + (int)((h >> 5) % (unsigned)max_rows);

  if (pixels > max_pixels) {
    decode(payload, len, arena_bytes(width, height, max_rows), max_rows, bands, ask, NULL, &open1,
           &used, 0);
    free(file);
    return 0;
  }
  ours = (uint8_t*)malloc((size_t)pixels * 4);
  ref = (uint8_t*)malloc((size_t)pixels * 4);
  r = decode(payload, len, arena_bytes(width, height, max_rows), max_rows, bands, ask, ours, &open1,
             &used, 0);
  if (r == ERR_ARENA) { /* thousands of groups: a MemoryError by design */
    free(ours);
    free(ref);
    free(file);
    return 0;
  }
  if (r == ERR_ARGS) fail("args", r, open1);
  if (open1 == 0) {
    /* an arena smaller than the one it used: -2, and no write past it */
    size_t less = 1 + (h >> 8) % 512;
    size_t small = used > less ? used - less : 0;
    (void)decode(payload, len, small, max_rows, bands, ask, NULL, &open2, &used2, 1);
    if (open2 != ERR_ARENA) fail("smaller arena did not fail with -2", open2, (int)less);
  }
  ok_ref = webp_decode_into(file, flen, ref, (size_t)pixels * 4, width * 4) != NULL;
  if (ok_ref != (r > 0)) fail("outcome differs from libwebp (ours, libwebp)", r, ok_ref);
  if (ok_ref) {
    int64_t i;
    for (i = 0; i < pixels; ++i) {
      const uint8_t* a = ours + i * bands;
      const uint8_t* b = ref + i * 4;
      if (a[0] != b[0] || a[1] != b[1] || a[2] != b[2] || (bands == 4 && a[3] != b[3]))
        fail("pixel differs from libwebp (index)", (int)i, bands);
    }
  }
  free(ours);
  free(ref);
  free(file);
  return 0;
}

#ifdef STANDALONE
/* gcc build without libFuzzer: replays the files named on the command line. */
int main(int argc, char** argv) {
  int i;
  for (i = 1; i < argc; ++i) {
    FILE* f = fopen(argv[i], "rb");
    uint8_t* buf;
    long n;
    if (!f) return 2;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (uint8_t*)malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) return 2;
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
  }
  printf("%d inputs replayed\n", argc - 1);
  return 0;
}
#endif
