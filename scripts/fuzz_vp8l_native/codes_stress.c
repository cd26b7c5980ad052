/*
 * Stress of vp8l.c's prefix-code tables: random complete codes (lengths 1..15,
 * alphabets up to 2328 symbols) are built in an arena of exactly the size the
 * builder asks for (AddressSanitizer reports a write past it), then every code
 * word is read back through read_symbol and must give its own symbol.
 *
 * Usage: codes_stress [iterations] [seed]
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../app/engine/native/vp8l.c"

static uint64_t rng_state;
static uint32_t rnd(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}

int main(int argc, char** argv) {
  long iters = argc > 1 ? atol(argv[1]) : 100000, it;
  rng_state = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
  for (it = 0; it < iters; ++it) {
    static const int alphabets[4] = {40, 256, 280, 2328};
    int n = alphabets[rnd() % 4], leaves = 2 + (int)(rnd() % (uint32_t)(n - 1)), count = 1, i, s;
    uint8_t depth[4096], lengths[2328] = {0};
    uint16_t sorted[2328];
    int perm[2328];
    uint32_t next_code[17] = {0}, bl_count[17] = {0};
    Arena big, exact;
    Code c;
    size_t need;
    uint8_t* buf;
    depth[0] = 0;
    /* split random leaves until there are `leaves` of them, none deeper than 15 */
    while (count < leaves) {
      int pick = (int)(rnd() % (uint32_t)count), tries = 0;
      while (depth[pick] >= MAX_CODE_LENGTH && tries++ < 64) pick = (int)(rnd() % (uint32_t)count);
      if (depth[pick] >= MAX_CODE_LENGTH) break;
      /* skew: prefer splitting deep leaves, for long codes and second-level tables */
      if (rnd() % 2) {
        int j, best = pick;
        for (j = 0; j < 4; ++j) {
          int q = (int)(rnd() % (uint32_t)count);
          if (depth[q] > depth[best] && depth[q] < MAX_CODE_LENGTH) best = q;
        }
        pick = best;
      }
      depth[pick]++;
      depth[count++] = depth[pick];
    }
    for (i = 0; i < n; ++i) perm[i] = i;
    for (i = n - 1; i > 0; --i) {
      int j = (int)(rnd() % (uint32_t)(i + 1)), t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
    for (i = 0; i < count; ++i) lengths[perm[i]] = depth[i];
    static uint8_t scratch[1 << 20];
    big.base = scratch;
    big.size = sizeof(scratch);
    big.used = 0;
    if (build_code(&big, &c, lengths, n, sorted) != 1) {
      fprintf(stderr, "complete code refused (iteration %ld)\n", it);
      abort();
    }
    need = big.used;
    buf = (uint8_t*)malloc(need);
    exact.base = buf;
    exact.size = need;
    exact.used = 0;
    if (build_code(&exact, &c, lengths, n, sorted) != 1) abort();
    exact.used = 0;
    exact.size = need - 1;
    if (build_code(&exact, &c, lengths, n, sorted) != -1) {
      fprintf(stderr, "one byte short did not fail\n");
      abort();
    }
    exact.size = need;
    exact.used = 0;
    build_code(&exact, &c, lengths, n, sorted);
    /* canonical codes, read least significant bit first */
    for (s = 0; s < n; ++s) bl_count[lengths[s]]++;
    bl_count[0] = 0;
    for (i = 1; i <= 16; ++i) next_code[i] = (next_code[i - 1] + bl_count[i - 1]) << 1;
    for (s = 0; s < n; ++s) {
      int len = lengths[s], b;
      uint32_t code, rev = 0;
      uint8_t bytes[16] = {0};
      Bits br;
      if (!len) continue;
      code = next_code[len]++;
      for (b = 0; b < len; ++b) rev |= ((code >> (len - 1 - b)) & 1u) << b;
      rev |= (rnd() & 0xffff) << len; /* what follows the code word */
      memcpy(bytes, &rev, 4);
      bits_init(&br, bytes, sizeof(bytes));
      if (read_symbol(&br, &c) != s || br.consumed != (uint64_t)len) {
        fprintf(stderr, "symbol %d (length %d) read back as another (iteration %ld)\n", s, len, it);
        abort();
      }
    }
    free(buf);
  }
  printf("%ld codes built and read back\n", iters);
  return 0;
}
