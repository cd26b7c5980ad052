/*
 * A streaming decoder for lossless WebP (VP8L), row by row, in bounded memory.
 *
 * Why: libwebp keeps the whole ARGB frame while it decodes a VP8L image (4 B/px,
 * 160 MB at 40 MP), because a backward reference may reach back 1,048,456 pixels
 * or 7 rows and 8 pixels. This decoder keeps only that window of decoded
 * (pre-transform) pixels, and hands out finished RGB(A) rows as they complete.
 *
 * Its contract, checked by the tests against libwebp on the same bytes: it fails
 * exactly where libwebp's WebPDecode fails, and where both succeed the pixels are
 * identical. The rules it follows are libwebp's (src/dec/vp8l_dec.c,
 * src/utils/huffman_utils.c, src/dsp/lossless.c), where they are stricter or
 * different from the format's specification: every prefix code must be complete
 * (a code of one symbol reads zero bits), a code-length repeat may not run past
 * the alphabet, a backward reference may not start before the image nor run past
 * its end, colour-index values beyond the palette are transparent black,
 * predictor modes 14 and 15 predict black, each transform appears at most once,
 * and reading one bit past the data (counting from the VP8L payload to the end
 * of the file, at least 8 bytes) is an error.
 *
 * Freestanding on purpose: no libc, no allocation. The caller hands over one
 * arena; everything lives in it. So the library has no ABI tie to the C library
 * of the machine it was built on, and a bug cannot reach malloc's heap.
 */

#include <stddef.h>
#include <stdint.h>

#ifndef VP8L_SOURCE_SHA256
#define VP8L_SOURCE_SHA256 "unknown"
#endif

#define EXPORT __attribute__((visibility("default")))

enum { OK = 0, ERR_DATA = -1, ERR_ARENA = -2, ERR_ARGS = -3 };

#define NUM_LITERALS 256
#define NUM_LENGTH_CODES 24
#define NUM_DISTANCE_CODES 40
#define MAX_CACHE_BITS 11
#define MAX_CODE_LENGTH 15
#define ROOT_BITS 8
#define MAX_GROUPS 65536
#define MAX_COPY 4096          /* the longest backward reference */
#define MAX_RAW_DISTANCE 1048456 /* 1,048,576 minus the 120 plane codes */
#define GREEN_MAX (NUM_LITERALS + NUM_LENGTH_CODES + (1 << MAX_CACHE_BITS))

enum { PREDICTOR = 0, CROSS_COLOR = 1, SUBTRACT_GREEN = 2, COLOR_INDEXING = 3 };

static const uint8_t kCodeLengthOrder[19] = {17, 18, 0, 1,  2,  3,  4,  5,  16, 6,
                                             7,  8,  9, 10, 11, 12, 13, 14, 15};

static const uint8_t kCodeToPlane[120] = {
    0x18, 0x07, 0x17, 0x19, 0x28, 0x06, 0x27, 0x29, 0x16, 0x1a, 0x26, 0x2a, 0x38, 0x05, 0x37,
    0x39, 0x15, 0x1b, 0x36, 0x3a, 0x25, 0x2b, 0x48, 0x04, 0x47, 0x49, 0x14, 0x1c, 0x35, 0x3b,
    0x46, 0x4a, 0x24, 0x2c, 0x58, 0x45, 0x4b, 0x34, 0x3c, 0x03, 0x57, 0x59, 0x13, 0x1d, 0x56,
    0x5a, 0x23, 0x2d, 0x44, 0x4c, 0x55, 0x5b, 0x33, 0x3d, 0x68, 0x02, 0x67, 0x69, 0x12, 0x1e,
    0x66, 0x6a, 0x22, 0x2e, 0x54, 0x5c, 0x43, 0x4d, 0x65, 0x6b, 0x32, 0x3e, 0x78, 0x01, 0x77,
    0x79, 0x53, 0x5d, 0x11, 0x1f, 0x64, 0x6c, 0x42, 0x4e, 0x76, 0x7a, 0x21, 0x2f, 0x75, 0x7b,
    0x31, 0x3f, 0x63, 0x6d, 0x52, 0x5e, 0x00, 0x74, 0x7c, 0x41, 0x4f, 0x10, 0x20, 0x62, 0x6e,
    0x30, 0x73, 0x7d, 0x51, 0x5f, 0x40, 0x72, 0x7e, 0x61, 0x6f, 0x50, 0x71, 0x7f, 0x60, 0x70};

/* ---- the arena ------------------------------------------------------------------ */

typedef struct {
  uint8_t* base;
  size_t size, used;
} Arena;

static void* take(Arena* a, size_t bytes) {
  size_t start = (a->used + 15) & ~(size_t)15;
  if (start > a->size || bytes > a->size - start) return NULL;
  a->used = start + bytes;
  return a->base + start;
}

static void zero(void* p, size_t bytes) {
  volatile uint8_t* b = (volatile uint8_t*)p; /* volatile: no call to memset */
  while (bytes--) *b++ = 0;
}

/* ---- bits, least significant first ---------------------------------------------- */

typedef struct {
  const uint8_t* buf;
  size_t len, pos; /* pos: next byte to load; past len, zeros are loaded */
  uint64_t val;
  int nbits;
  uint64_t consumed, avail; /* bits read, and how many there are */
} Bits;

static void bits_init(Bits* br, const uint8_t* buf, size_t len) {
  br->buf = buf;
  br->len = len;
  br->pos = 0;
  br->val = 0;
  br->nbits = 0;
  br->consumed = 0;
  /* libwebp preloads 8 bytes: a shorter input still reads as 64 bits. */
  br->avail = len < 8 ? 64 : (uint64_t)len * 8;
}

static inline void bits_fill(Bits* br) {
  if (br->nbits > 56) return;
  if (br->pos + 8 <= br->len) {
    const uint8_t* p = br->buf + br->pos;
    uint64_t w = (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
                 (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
                 (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
    int take_bytes = (63 - br->nbits) >> 3;
    br->val |= w << br->nbits;
    br->pos += (size_t)take_bytes;
    br->nbits += take_bytes * 8;
    return;
  }
  while (br->nbits <= 56) {
    uint64_t b = br->pos < br->len ? br->buf[br->pos] : 0;
    br->val |= b << br->nbits;
    br->pos++;
    br->nbits += 8;
  }
}

static inline void bits_skip(Bits* br, int n) {
  br->val >>= n;
  br->nbits -= n;
  br->consumed += (uint64_t)n;
}

static inline uint32_t bits_read(Bits* br, int n) {
  uint32_t v;
  if (n == 0) return 0;
  bits_fill(br);
  v = (uint32_t)(br->val & ((1ull << n) - 1));
  bits_skip(br, n);
  return v;
}

static inline int bits_over(const Bits* br) { return br->consumed > br->avail; }

/* ---- prefix codes ------------------------------------------------------------------ */

typedef struct {
  uint16_t value; /* a symbol, or the offset of a second-level table */
  uint8_t bits;   /* the code's length (<= root), or 16 + second-level bits */
  uint8_t pad;
} Entry;

typedef struct {
  Entry* table;
  int root; /* bits looked up first; 0 for a code of one symbol */
} Code;

typedef struct {
  Code green, red, blue, alpha, dist;
} Group;

static inline int read_symbol(Bits* br, const Code* c) {
  Entry e;
  bits_fill(br);
  e = c->table[br->val & ((1u << c->root) - 1)];
  if (e.bits > 16) {
    int sub = e.bits - 16;
    Entry f;
    bits_skip(br, c->root);
    f = c->table[e.value + (br->val & ((1u << sub) - 1))];
    bits_skip(br, f.bits);
    return f.value;
  }
  bits_skip(br, e.bits);
  return e.value;
}

static inline void replicate(Entry* t, int step, int end, Entry e) {
  do {
    end -= step;
    t[end] = e;
  } while (end > 0);
}

static inline uint32_t next_key(uint32_t key, int len) {
  uint32_t step = 1u << (len - 1);
  while (key & step) step >>= 1;
  return step ? (key & (step - 1)) + step : key;
}

static int next_table_bits(const int* count, int len, int root) {
  int left = 1 << (len - root);
  while (len < MAX_CODE_LENGTH) {
    left -= count[len];
    if (left <= 0) break;
    ++len;
    left <<= 1;
  }
  return len - root;
}

/* Builds the lookup table of the code with these lengths, in the arena; the
 * root is as wide as the longest code up to 8 bits. Fails on an empty code and
 * on one that is not complete (libwebp's rule), except a code of one symbol,
 * which reads no bits. `sorted` has room for n symbols. */
static int build_code(Arena* a, Code* c, const uint8_t* lengths, int n, uint16_t* sorted) {
  int count[MAX_CODE_LENGTH + 1] = {0};
  int offset[MAX_CODE_LENGTH + 2];
  int len, s, symbols = 0, max_len = 0, root, total;
  int32_t left = 1;
  for (s = 0; s < n; ++s) ++count[lengths[s]];
  for (len = 1; len <= MAX_CODE_LENGTH; ++len) {
    symbols += count[len];
    if (count[len]) max_len = len;
  }
  if (symbols == 0) return 0;
  offset[1] = 0;
  for (len = 1; len <= MAX_CODE_LENGTH; ++len) offset[len + 1] = offset[len] + count[len];
  for (s = 0; s < n; ++s)
    if (lengths[s]) sorted[offset[lengths[s]]++] = (uint16_t)s;
  if (symbols == 1) {
    c->table = (Entry*)take(a, sizeof(Entry));
    if (!c->table) return -1;
    c->table[0].value = sorted[0];
    c->table[0].bits = 0;
    c->root = 0;
    return 1;
  }
  for (len = 1; len <= MAX_CODE_LENGTH; ++len) {
    left = (left << 1) - count[len];
    if (left < 0) return 0; /* over-subscribed */
  }
  if (left != 0) return 0; /* incomplete */

  root = max_len < ROOT_BITS ? max_len : ROOT_BITS;
  /* The table's size: the root, then each second-level table (counted first). */
  total = 1 << root;
  {
    int cnt[MAX_CODE_LENGTH + 1];
    uint32_t key = 0, low = 0xffffffffu, mask = (1u << root) - 1;
    for (len = 0; len <= MAX_CODE_LENGTH; ++len) cnt[len] = count[len];
    for (len = 1; len <= root; ++len)
      for (s = cnt[len]; s > 0; --s) key = next_key(key, len);
    for (len = root + 1; len <= MAX_CODE_LENGTH; ++len)
      for (; cnt[len] > 0; --cnt[len]) {
        if ((key & mask) != low) {
          total += 1 << next_table_bits(cnt, len, root);
          low = key & mask;
        }
        key = next_key(key, len);
      }
  }
  c->table = (Entry*)take(a, (size_t)total * sizeof(Entry));
  if (!c->table) return -1;
  c->root = root;
  {
    Entry* table = c->table;
    int table_bits, table_size = 1 << root, step, sym = 0;
    uint32_t key = 0, low = 0xffffffffu, mask = (1u << root) - 1;
    for (len = 1, step = 2; len <= root; ++len, step <<= 1) {
      for (; count[len] > 0; --count[len]) {
        Entry e;
        e.bits = (uint8_t)len;
        e.value = sorted[sym++];
        e.pad = 0;
        replicate(&table[key], step, table_size, e);
        key = next_key(key, len);
      }
    }
    for (len = root + 1; len <= MAX_CODE_LENGTH; ++len) {
      for (; count[len] > 0; --count[len]) {
        Entry e;
        if ((key & mask) != low) {
          table += table_size;
          table_bits = next_table_bits(count, len, root);
          table_size = 1 << table_bits;
          low = key & mask;
          c->table[low].bits = (uint8_t)(16 + table_bits);
          c->table[low].value = (uint16_t)(table - c->table);
          c->table[low].pad = 0;
        }
        e.bits = (uint8_t)(len - root);
        e.value = sorted[sym++];
        e.pad = 0;
        replicate(&table[key >> root], 1 << (len - root), table_size, e);
        key = next_key(key, len);
      }
    }
  }
  return 1;
}

/* ---- the decoder's state ------------------------------------------------------------ */

typedef struct {
  int type, bits, xsize; /* xsize: the width the transform works on (its output) */
  uint32_t* data;        /* sub-image, or the palette (256 entries) */
} Transform;

typedef struct {
  Group* groups;     /* one per meta code in use */
  uint32_t* image;   /* entropy image: group index per block, or NULL */
  int bits, xsize;   /* its block size (log2) and width in blocks */
  uint32_t* cache;   /* colour cache, or NULL */
  int cache_shift;
} Level;

typedef struct {
  Arena arena;
  Bits br;
  int width, height, alpha_hint;
  int xsize; /* the coded width: the image width, or fewer after pixel bundling */
  Transform tr[4];
  int ntr, seen;
  Level main;
  /* window of decoded (pre-transform) pixels: pix[i] is pixel base + i */
  uint32_t* pix;
  int64_t cap, base, pos, total, window;
  int x, y;       /* the column and row of pixel `pos` */
  int out_row;    /* next row handed out */
  int max_rows;
  uint32_t *row_a, *row_b, *prev; /* transform scratch; the predictor's last row */
  uint8_t* lengths;
  uint16_t* sorted;
  int failed;
} Dec;

static inline int sub_size(int size, int bits) { return (size + (1 << bits) - 1) >> bits; }

static inline int prefix_value(Bits* br, int symbol) {
  int extra, offset;
  if (symbol < 4) return symbol + 1;
  extra = (symbol - 2) >> 1;
  offset = (2 + (symbol & 1)) << extra;
  return offset + (int)bits_read(br, extra) + 1;
}

static inline int64_t plane_distance(int xsize, int code) {
  if (code > 120) return code - 120;
  {
    int d = kCodeToPlane[code - 1];
    int64_t dist = (int64_t)(d >> 4) * xsize + (8 - (d & 0xf));
    return dist >= 1 ? dist : 1;
  }
}

/* One prefix code of `alphabet` symbols from the stream (simple or normal).
 * Returns 1, 0 on bad data, -1 when the arena is full. */
static int read_code(Dec* d, Arena* a, Code* c, int alphabet) {
  Bits* br = &d->br;
  uint8_t* lengths = d->lengths;
  int i;
  for (i = 0; i < alphabet; ++i) lengths[i] = 0;
  if (bits_read(br, 1)) { /* simple: one or two symbols of length 1 */
    int two = (int)bits_read(br, 1);
    int first = (int)bits_read(br, bits_read(br, 1) ? 8 : 1);
    if (first < alphabet) lengths[first] = 1;
    if (two) {
      int second = (int)bits_read(br, 8);
      if (second < alphabet) lengths[second] = 1;
    }
  } else {
    uint8_t cl_lengths[19] = {0};
    uint16_t cl_sorted[19];
    Entry cl_table[128];
    Arena cl_arena;
    Code cl;
    int n = (int)bits_read(br, 4) + 4, max_symbol, symbol = 0, prev = 8, r;
    for (i = 0; i < n; ++i) cl_lengths[kCodeLengthOrder[i]] = (uint8_t)bits_read(br, 3);
    cl_arena.base = (uint8_t*)cl_table;
    cl_arena.size = sizeof(cl_table);
    cl_arena.used = 0;
    r = build_code(&cl_arena, &cl, cl_lengths, 19, cl_sorted);
    if (r <= 0) return 0; /* 7-bit lengths fit 128 entries: never the arena */
    if (bits_read(br, 1)) {
      int nbits = 2 + 2 * (int)bits_read(br, 3);
      max_symbol = 2 + (int)bits_read(br, nbits);
      if (max_symbol > alphabet) return 0;
    } else {
      max_symbol = alphabet;
    }
    while (symbol < alphabet) {
      int len;
      if (max_symbol-- == 0) break;
      len = read_symbol(br, &cl);
      if (len < 16) {
        lengths[symbol++] = (uint8_t)len;
        if (len) prev = len;
      } else {
        static const uint8_t extra[3] = {2, 3, 7}, base[3] = {3, 3, 11};
        int repeat = (int)bits_read(br, extra[len - 16]) + base[len - 16];
        int value = len == 16 ? prev : 0;
        if (symbol + repeat > alphabet) return 0;
        while (repeat-- > 0) lengths[symbol++] = (uint8_t)value;
      }
    }
  }
  if (bits_over(br)) return 0;
  if (!c) return 1; /* read to skip (an unused meta code): only its validity counts */
  {
    int r = build_code(a, c, lengths, alphabet, d->sorted);
    return r;
  }
}

static int read_group(Dec* d, Arena* a, Group* g, int cache_bits) {
  int green = NUM_LITERALS + NUM_LENGTH_CODES + (cache_bits ? 1 << cache_bits : 0);
  int r;
  if ((r = read_code(d, a, g ? &g->green : NULL, green)) <= 0) return r;
  if ((r = read_code(d, a, g ? &g->red : NULL, NUM_LITERALS)) <= 0) return r;
  if ((r = read_code(d, a, g ? &g->blue : NULL, NUM_LITERALS)) <= 0) return r;
  if ((r = read_code(d, a, g ? &g->alpha : NULL, NUM_LITERALS)) <= 0) return r;
  return read_code(d, a, g ? &g->dist : NULL, NUM_DISTANCE_CODES);
}

/* Skipping an unused meta code still needs somewhere to build it (its
 * completeness is checked by building): a scratch arena, reset each time. */
static int skip_group(Dec* d, Arena* a, int cache_bits) {
  size_t mark = a->used;
  Group g;
  int r = read_group(d, a, &g, cache_bits);
  a->used = mark;
  return r;
}

static int read_cache_bits(Dec* d, int* bits) {
  *bits = 0;
  if (bits_read(&d->br, 1)) {
    *bits = (int)bits_read(&d->br, 4);
    if (*bits < 1 || *bits > MAX_CACHE_BITS) return 0;
  }
  return 1;
}

static inline void cache_insert(const Level* lv, uint32_t argb) {
  lv->cache[(uint32_t)(argb * 0x1e35a7bdu) >> lv->cache_shift] = argb;
}

/* Decodes pixels [*pos, target) of a level into buf (buf[i] is pixel *base + i),
 * with its codes. Copies may run past target (to the image's end at most).
 * `shift` keeps the window when the buffer fills. Returns 1, 0 on bad data. */
static int decode_pixels(Dec* d, Level* lv, uint32_t* buf, int64_t* base, int64_t cap,
                         int64_t* pos_io, int* x_io, int* y_io, int xsize, int64_t total,
                         int64_t target, int windowed) {
  Bits* br = &d->br;
  int64_t pos = *pos_io;
  int x = *x_io, y = *y_io;
  const int hmask = lv->image ? (1 << lv->bits) - 1 : 0;
  const Group* g = lv->groups; /* a block's own is looked up before its first pixel */
  const int len_limit = NUM_LITERALS + NUM_LENGTH_CODES;
  int refetch = 1;
  while (pos < target) {
    int code;
    if (windowed && pos - *base + MAX_COPY + 1 > cap) {
      /* keep the window and the rows not yet handed out; move them down */
      int64_t keep_from = pos - d->window;
      int64_t first_pending = (int64_t)d->out_row * xsize;
      int64_t i, n;
      if (keep_from > first_pending) keep_from = first_pending;
      if (keep_from < *base) keep_from = *base;
      n = pos - keep_from;
      for (i = 0; i < n; ++i) buf[i] = buf[keep_from - *base + i];
      *base = keep_from;
      if (pos - *base + MAX_COPY + 1 > cap) return -1; /* cannot happen: sized so */
    }
    if (lv->image && (refetch || (x & hmask) == 0)) {
      g = &lv->groups[lv->image[(y >> lv->bits) * lv->xsize + (x >> lv->bits)]];
      refetch = 0;
    }
    code = read_symbol(br, &g->green);
    if (code < NUM_LITERALS) {
      uint32_t red = (uint32_t)read_symbol(br, &g->red);
      uint32_t blue = (uint32_t)read_symbol(br, &g->blue);
      uint32_t alpha = (uint32_t)read_symbol(br, &g->alpha);
      uint32_t argb = alpha << 24 | red << 16 | (uint32_t)code << 8 | blue;
      buf[pos - *base] = argb;
      if (lv->cache) cache_insert(lv, argb);
      ++pos;
      if (++x == xsize) {
        x = 0;
        ++y;
        if (bits_over(br)) return 0;
      }
    } else if (code < len_limit) {
      int length = prefix_value(br, code - NUM_LITERALS);
      int dist_symbol = read_symbol(br, &g->dist);
      int64_t dist = plane_distance(xsize, prefix_value(br, dist_symbol));
      uint32_t* dst;
      int i;
      if (bits_over(br)) return 0;
      if (dist > pos || length > total - pos) return 0;
      dst = buf + (pos - *base);
      for (i = 0; i < length; ++i) dst[i] = dst[i - dist];
      if (lv->cache)
        for (i = 0; i < length; ++i) cache_insert(lv, dst[i]);
      pos += length;
      x += length;
      while (x >= xsize) {
        x -= xsize;
        ++y;
      }
      refetch = 1;
    } else {
      uint32_t argb;
      if (!lv->cache) return 0; /* no such symbol without a cache */
      argb = lv->cache[code - len_limit];
      buf[pos - *base] = argb;
      cache_insert(lv, argb);
      ++pos;
      if (++x == xsize) {
        x = 0;
        ++y;
        if (bits_over(br)) return 0;
      }
    }
  }
  *pos_io = pos;
  *x_io = x;
  *y_io = y;
  return !bits_over(br);
}

/* A sub-image (transform data or the entropy image): its own colour cache and one
 * meta code, no transforms; kept whole in `out`. */
static int decode_sub_image(Dec* d, int xsize, int ysize, uint32_t* out) {
  Arena* a = &d->arena;
  size_t mark = a->used;
  Level lv;
  Group g;
  int cache_bits, r;
  int64_t base = 0, pos = 0, total = (int64_t)xsize * ysize;
  int x = 0, y = 0;
  if (!read_cache_bits(d, &cache_bits)) return 0;
  if ((r = read_group(d, a, &g, cache_bits)) <= 0) return r;
  lv.groups = &g;
  lv.image = NULL;
  lv.bits = 0;
  lv.xsize = 0;
  lv.cache = NULL;
  lv.cache_shift = 32 - cache_bits;
  if (cache_bits) {
    lv.cache = (uint32_t*)take(a, sizeof(uint32_t) << cache_bits);
    if (!lv.cache) return -1;
    zero(lv.cache, sizeof(uint32_t) << cache_bits);
  }
  r = decode_pixels(d, &lv, out, &base, total, &pos, &x, &y, xsize, total, total, 0);
  a->used = mark; /* its tables and cache are done with */
  return r;
}

static int read_transform(Dec* d, int* xsize) {
  Bits* br = &d->br;
  Arena* a = &d->arena;
  int type = (int)bits_read(br, 2), r;
  Transform* t;
  if (d->seen & (1 << type)) return 0;
  d->seen |= 1 << type;
  t = &d->tr[d->ntr++];
  t->type = type;
  t->xsize = *xsize;
  t->data = NULL;
  t->bits = 0;
  if (type == PREDICTOR || type == CROSS_COLOR) {
    int w, h;
    t->bits = (int)bits_read(br, 3) + 2;
    w = sub_size(t->xsize, t->bits);
    h = sub_size(d->height, t->bits);
    t->data = (uint32_t*)take(a, (size_t)w * (size_t)h * 4);
    if (!t->data) return -1;
    return decode_sub_image(d, w, h, t->data);
  }
  if (type == COLOR_INDEXING) {
    int colours = (int)bits_read(br, 8) + 1, i;
    uint8_t* bytes;
    t->bits = colours > 16 ? 0 : colours > 4 ? 1 : colours > 2 ? 2 : 3;
    *xsize = sub_size(t->xsize, t->bits);
    t->data = (uint32_t*)take(a, 256 * 4);
    if (!t->data) return -1;
    zero(t->data, 256 * 4); /* indices past the palette: transparent black */
    if ((r = decode_sub_image(d, colours, 1, t->data)) <= 0) return r;
    bytes = (uint8_t*)t->data; /* the palette is delta-coded, byte by byte */
    for (i = 4; i < 4 * colours; ++i) bytes[i] = (uint8_t)(bytes[i] + bytes[i - 4]);
    return 1;
  }
  return 1; /* subtract green: no data */
}

/* The main image's codes: optional entropy image, then each meta code. Meta codes
 * no block uses are read and checked, not kept (as libwebp). */
static int read_main_codes(Dec* d, int cache_bits) {
  Arena* a = &d->arena;
  Level* lv = &d->main;
  int groups_max = 1, used = 1, r;
  uint32_t* map = NULL;
  lv->image = NULL;
  lv->bits = 0;
  lv->xsize = 0;
  if (bits_read(&d->br, 1)) {
    int64_t i, n;
    int h;
    lv->bits = (int)bits_read(&d->br, 3) + 2;
    lv->xsize = sub_size(d->xsize, lv->bits);
    h = sub_size(d->height, lv->bits);
    n = (int64_t)lv->xsize * h;
    lv->image = (uint32_t*)take(a, (size_t)n * 4);
    if (!lv->image) return -1;
    if ((r = decode_sub_image(d, lv->xsize, h, lv->image)) <= 0) return r;
    for (i = 0; i < n; ++i) {
      uint32_t gi = (lv->image[i] >> 8) & 0xffff;
      lv->image[i] = gi;
      if ((int)gi >= groups_max) groups_max = (int)gi + 1;
    }
    /* index of each meta code among those in use, in order of first use */
    map = (uint32_t*)take(a, (size_t)groups_max * 4);
    if (!map) return -1;
    for (i = 0; i < groups_max; ++i) map[i] = 0xffffffffu;
    used = 0;
    for (i = 0; i < n; ++i) {
      uint32_t* m = &map[lv->image[i]];
      if (*m == 0xffffffffu) *m = (uint32_t)used++;
      lv->image[i] = *m;
    }
  }
  if (bits_over(&d->br)) return 0;
  lv->groups = (Group*)take(a, (size_t)used * sizeof(Group));
  if (!lv->groups) return -1;
  {
    int i;
    for (i = 0; i < groups_max; ++i) {
      if (map && map[i] == 0xffffffffu) {
        if ((r = skip_group(d, a, cache_bits)) <= 0) return r;
      } else {
        Group* g = &lv->groups[map ? map[i] : (uint32_t)i];
        if ((r = read_group(d, a, g, cache_bits)) <= 0) return r;
      }
    }
  }
  return 1;
}

/* ---- inverse transforms, one row at a time -------------------------------------------- */

static inline uint32_t add_pixels(uint32_t a, uint32_t b) {
  uint32_t ag = (a & 0xff00ff00u) + (b & 0xff00ff00u);
  uint32_t rb = (a & 0x00ff00ffu) + (b & 0x00ff00ffu);
  return (ag & 0xff00ff00u) | (rb & 0x00ff00ffu);
}

static inline uint32_t average2(uint32_t a, uint32_t b) {
  return (((a ^ b) & 0xfefefefeu) >> 1) + (a & b);
}

static inline int clip255(int v) { return v < 0 ? 0 : v > 255 ? 255 : v; }

static inline int abs_int(int v) { return v < 0 ? -v : v; }

static inline uint32_t clamped_full(uint32_t c0, uint32_t c1, uint32_t c2) {
  uint32_t out = 0;
  int s;
  for (s = 0; s < 32; s += 8) {
    int v = (int)((c0 >> s) & 0xff) + (int)((c1 >> s) & 0xff) - (int)((c2 >> s) & 0xff);
    out |= (uint32_t)clip255(v) << s;
  }
  return out;
}

static inline uint32_t clamped_half(uint32_t c0, uint32_t c1, uint32_t c2) {
  uint32_t ave = average2(c0, c1), out = 0;
  int s;
  for (s = 0; s < 32; s += 8) {
    int a = (int)((ave >> s) & 0xff), b = (int)((c2 >> s) & 0xff);
    out |= (uint32_t)clip255(a + (a - b) / 2) << s;
  }
  return out;
}

static inline uint32_t select_pred(uint32_t a, uint32_t b, uint32_t c) {
  int diff = 0, s;
  for (s = 0; s < 32; s += 8) {
    int pa = (int)((a >> s) & 0xff), pb = (int)((b >> s) & 0xff), pc = (int)((c >> s) & 0xff);
    diff += abs_int(pb - pc) - abs_int(pa - pc);
  }
  return diff <= 0 ? a : b;
}

static inline uint32_t predict(int mode, uint32_t L, uint32_t T, uint32_t TL, uint32_t TR) {
  switch (mode) {
    case 1: return L;
    case 2: return T;
    case 3: return TR;
    case 4: return TL;
    case 5: return average2(average2(L, TR), T);
    case 6: return average2(L, TL);
    case 7: return average2(L, T);
    case 8: return average2(TL, T);
    case 9: return average2(T, TR);
    case 10: return average2(average2(L, TL), average2(T, TR));
    case 11: return select_pred(T, L, TL);
    case 12: return clamped_full(L, T, TL);
    case 13: return clamped_half(L, T, TL);
    default: return 0xff000000u; /* 0, and 14 and 15 as libwebp */
  }
}

static void inverse_predictor(const Transform* t, int y, const uint32_t* in, uint32_t* out,
                              uint32_t* prev) {
  const int w = t->xsize;
  int x;
  if (y == 0) {
    out[0] = add_pixels(in[0], 0xff000000u);
    for (x = 1; x < w; ++x) out[x] = add_pixels(in[x], out[x - 1]);
  } else {
    const uint32_t* modes = t->data + (size_t)(y >> t->bits) * (size_t)sub_size(w, t->bits);
    out[0] = add_pixels(in[0], prev[0]);
    for (x = 1; x < w; ++x) {
      int mode = (int)((modes[x >> t->bits] >> 8) & 0xf);
      uint32_t TR = x + 1 < w ? prev[x + 1] : out[0];
      out[x] = add_pixels(in[x], predict(mode, out[x - 1], prev[x], prev[x - 1], TR));
    }
  }
  for (x = 0; x < w; ++x) prev[x] = out[x];
}

static void inverse_cross_color(const Transform* t, int y, const uint32_t* in, uint32_t* out) {
  const int w = t->xsize;
  const uint32_t* codes = t->data + (size_t)(y >> t->bits) * (size_t)sub_size(w, t->bits);
  int x;
  for (x = 0; x < w; ++x) {
    uint32_t code = codes[x >> t->bits], argb = in[x];
    int8_t g2r = (int8_t)(code & 0xff), g2b = (int8_t)((code >> 8) & 0xff);
    int8_t r2b = (int8_t)((code >> 16) & 0xff);
    int8_t green = (int8_t)(argb >> 8);
    int red = (int)((argb >> 16) & 0xff), blue = (int)(argb & 0xff);
    red = (red + (((int)g2r * green) >> 5)) & 0xff;
    blue += ((int)g2b * green) >> 5;
    blue += ((int)r2b * (int8_t)red) >> 5;
    blue &= 0xff;
    out[x] = (argb & 0xff00ff00u) | (uint32_t)red << 16 | (uint32_t)blue;
  }
}

static void inverse_subtract_green(int w, const uint32_t* in, uint32_t* out) {
  int x;
  for (x = 0; x < w; ++x) {
    uint32_t argb = in[x], green = (argb >> 8) & 0xff;
    uint32_t rb = ((argb & 0x00ff00ffu) + (green << 16 | green)) & 0x00ff00ffu;
    out[x] = (argb & 0xff00ff00u) | rb;
  }
}

static void inverse_color_indexing(const Transform* t, const uint32_t* in, uint32_t* out) {
  const int w = t->xsize;
  int x;
  if (t->bits == 0) {
    for (x = 0; x < w; ++x) out[x] = t->data[(in[x] >> 8) & 0xff];
  } else {
    const int per = 1 << t->bits, bpp = 8 >> t->bits, mask = (1 << bpp) - 1;
    for (x = 0; x < w; ++x) {
      uint32_t packed = (in[x >> t->bits] >> 8) & 0xff;
      out[x] = t->data[(packed >> ((x & (per - 1)) * bpp)) & mask];
    }
  }
}

/* Row y of the image, all transforms undone, as ARGB in d->row_a or row_b. */
static const uint32_t* finish_row(Dec* d, int y) {
  const uint32_t* in = d->pix + ((int64_t)y * d->xsize - d->base);
  uint32_t* bufs[2] = {d->row_a, d->row_b};
  int i, which = 0;
  for (i = d->ntr - 1; i >= 0; --i) {
    const Transform* t = &d->tr[i];
    uint32_t* out = bufs[which];
    switch (t->type) {
      case PREDICTOR: inverse_predictor(t, y, in, out, d->prev); break;
      case CROSS_COLOR: inverse_cross_color(t, y, in, out); break;
      case SUBTRACT_GREEN: inverse_subtract_green(t->xsize, in, out); break;
      default: inverse_color_indexing(t, in, out); break;
    }
    in = out;
    which ^= 1;
  }
  return in;
}

/* ---- the interface --------------------------------------------------------------------- */

EXPORT const char* vp8l_source_id(void) { return VP8L_SOURCE_SHA256; }

/* The coded stream in `data` (the VP8L payload to the end of the file) is read
 * up to its first pixel: header, transforms, codes. `arena` holds everything,
 * the decoder's state first; rows are then asked for `max_rows` at a time at
 * most. info gets width, height, alpha hint. 0, or ERR_*. */
EXPORT int vp8l_open(const uint8_t* data, size_t len, uint8_t* arena, size_t arena_len,
                     int max_rows, int32_t* info) {
  Arena a;
  Dec* d;
  int xsize, cache_bits, r;
  if (!data || !arena || max_rows < 1 || max_rows > 65536 || !info) return ERR_ARGS;
  a.base = arena;
  a.size = arena_len;
  a.used = 0;
  d = (Dec*)take(&a, sizeof(Dec));
  if (!d) return ERR_ARENA;
  zero(d, sizeof(Dec));
  d->arena = a;
  d->failed = 1;
  bits_init(&d->br, data, len);
  if (bits_read(&d->br, 8) != 0x2f) return ERR_DATA;
  d->width = (int)bits_read(&d->br, 14) + 1;
  d->height = (int)bits_read(&d->br, 14) + 1;
  d->alpha_hint = (int)bits_read(&d->br, 1);
  if (bits_read(&d->br, 3) != 0 || bits_over(&d->br)) return ERR_DATA;
  d->lengths = (uint8_t*)take(&d->arena, GREEN_MAX);
  d->sorted = (uint16_t*)take(&d->arena, GREEN_MAX * 2);
  if (!d->lengths || !d->sorted) return ERR_ARENA;
  xsize = d->width;
  while (bits_read(&d->br, 1)) {
    if (d->ntr == 4) return ERR_DATA; /* cannot happen: each type once */
    if ((r = read_transform(d, &xsize)) <= 0) return r < 0 ? ERR_ARENA : ERR_DATA;
  }
  d->xsize = xsize;
  if (!read_cache_bits(d, &cache_bits)) return ERR_DATA;
  if ((r = read_main_codes(d, cache_bits)) <= 0) return r < 0 ? ERR_ARENA : ERR_DATA;
  d->main.cache = NULL;
  d->main.cache_shift = 32 - cache_bits;
  if (cache_bits) {
    d->main.cache = (uint32_t*)take(&d->arena, sizeof(uint32_t) << cache_bits);
    if (!d->main.cache) return ERR_ARENA;
    zero(d->main.cache, sizeof(uint32_t) << cache_bits);
  }
  d->total = (int64_t)d->xsize * d->height;
  d->window = (int64_t)7 * d->xsize + 8;
  if (d->window < MAX_RAW_DISTANCE) d->window = MAX_RAW_DISTANCE;
  d->cap = 2 * d->window + (int64_t)(max_rows + 1) * d->xsize + 2 * MAX_COPY;
  if (d->cap > d->total + MAX_COPY + 1) d->cap = d->total + MAX_COPY + 1;
  d->max_rows = max_rows;
  d->pix = (uint32_t*)take(&d->arena, (size_t)d->cap * 4);
  d->row_a = (uint32_t*)take(&d->arena, (size_t)d->width * 4);
  d->row_b = (uint32_t*)take(&d->arena, (size_t)d->width * 4);
  d->prev = (uint32_t*)take(&d->arena, (size_t)d->width * 4);
  if (!d->pix || !d->row_a || !d->row_b || !d->prev) return ERR_ARENA;
  if (bits_over(&d->br)) return ERR_DATA;
  info[0] = d->width;
  info[1] = d->height;
  info[2] = d->alpha_hint;
  d->failed = 0;
  return OK;
}

/* Up to max_rows finished rows into `out` (bands 3: RGB, 4: RGBA; width * bands
 * bytes a row). The number of rows, 0 after the last, or ERR_*. After the last
 * row the whole stream has been checked. */
EXPORT int vp8l_rows(uint8_t* arena, uint8_t* out, int bands, int max_rows) {
  Dec* d = (Dec*)arena;
  int n = 0, r;
  if (!arena || !out || (bands != 3 && bands != 4) || max_rows < 1) return ERR_ARGS;
  if (d->failed) return ERR_DATA;
  if (max_rows > d->max_rows) max_rows = d->max_rows;
  if (d->out_row >= d->height) return 0;
  {
    int last = d->out_row + max_rows;
    int64_t target;
    if (last > d->height) last = d->height;
    target = (int64_t)last * d->xsize;
    if (d->pos < target) {
      r = decode_pixels(d, &d->main, d->pix, &d->base, d->cap, &d->pos, &d->x, &d->y, d->xsize,
                        d->total, target, 1);
      if (r <= 0) {
        d->failed = 1;
        return r < 0 ? ERR_ARENA : ERR_DATA;
      }
    }
    for (; d->out_row < last; ++d->out_row, ++n) {
      const uint32_t* row = finish_row(d, d->out_row);
      uint8_t* o = out + (size_t)n * (size_t)d->width * (size_t)bands;
      int x;
      if (bands == 4) {
        for (x = 0; x < d->width; ++x, o += 4) {
          uint32_t p = row[x];
          o[0] = (uint8_t)(p >> 16);
          o[1] = (uint8_t)(p >> 8);
          o[2] = (uint8_t)p;
          o[3] = (uint8_t)(p >> 24);
        }
      } else {
        for (x = 0; x < d->width; ++x, o += 3) {
          uint32_t p = row[x];
          o[0] = (uint8_t)(p >> 16);
          o[1] = (uint8_t)(p >> 8);
          o[2] = (uint8_t)p;
        }
      }
    }
  }
  if (d->out_row >= d->height && bits_over(&d->br)) {
    d->failed = 1;
    return ERR_DATA;
  }
  return n;
}
