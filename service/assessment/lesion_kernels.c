/* Fused lesion kernels for the tail of an MLP: delta -> [ReLU -> Linear] -> argmax -> per-class counts.
 *
 * Built at run time by neuronmap.service.native with the machine's own compiler (-O2 -march=native) and called
 * through ctypes, which releases the GIL, so several Python threads can each take a range of lesions.
 *
 * One lesion m silences (or, in the complement form, keeps) the units idx[m, :] of a layer whose values are h
 * (B x C, zero-preserving activations, so mostly ReLU outputs with many zeros). The next Linear's weight is given
 * transposed, wt (C x H). For input b:
 *     acc  = sum over units i of lesion m with h[b, i] != 0 of h[b, i] * wt[i, :]   (zeros add nothing: skipped)
 *     pre  = base[b] - acc    (delta form: base is the intact Linear output z)
 *     pre  = base    + acc    (complement form: base is the Linear's bias, one row for all inputs)
 * With a hidden step (ReLU -> Linear out), logits = bout + wout . relu(pre); without one, logits = pre (the Linear
 * is the output layer). The first maximum of the logits is the prediction, as torch.argmax; a correct one adds
 * one to counts[m, y[b]].
 *
 * Layout contract (checked in Python): float32 and int64, C-contiguous; H and the logits' width are multiples of
 * 16 (zero padding; padded logits are ignored through n_out); wout's rows are padded with zeros to a multiple of 4,
 * at most MAX_OUT of them; idx is padded with C ("no unit").
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef int32_t i16 __attribute__((vector_size(64)));

static inline v16 load(const float *p) { return *(const v16u *)p; }
static inline void store(float *p, v16 v) { *(v16u *)p = v; }

#define INPUT_TILE 64 /* inputs whose h and base rows stay in L2 while every lesion passes over them */
#define MAX_OUT 64 /* outputs of the last Linear handled here; wider ones run on torch */

/* max(a, 0) lane by lane (C has no vector ?:; the compiler turns the masks into one max instruction) */
static inline v16 relu(v16 a) {
    const v16 zero = {0};
    const i16 positive = a > zero;
    return (v16)((i16)a & positive);
}

/* acc[0:H] = sum_t hv[t] * wt[unit[t], 0:H], eight vectors (128 floats) at a time in registers. */
static void gather_axpy(const float *wt, int64_t H, const int64_t *unit, const float *hv, int64_t n, float *acc) {
    int64_t c0 = 0;
    for (; c0 + 128 <= H; c0 += 128) {
        v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
        for (int64_t t = 0; t < n; t++) {
            const float *w = wt + unit[t] * H + c0;
            const float v = hv[t];
            a0 += v * load(w);       a1 += v * load(w + 16);  a2 += v * load(w + 32);  a3 += v * load(w + 48);
            a4 += v * load(w + 64);  a5 += v * load(w + 80);  a6 += v * load(w + 96);  a7 += v * load(w + 112);
        }
        store(acc + c0, a0);       store(acc + c0 + 16, a1);  store(acc + c0 + 32, a2);  store(acc + c0 + 48, a3);
        store(acc + c0 + 64, a4);  store(acc + c0 + 80, a5);  store(acc + c0 + 96, a6);  store(acc + c0 + 112, a7);
    }
    for (; c0 < H; c0 += 16) {  /* four chains over the units, so that no addition waits on the one before */
        v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        int64_t t = 0;
        for (; t + 4 <= n; t += 4) {
            a0 += hv[t] * load(wt + unit[t] * H + c0);
            a1 += hv[t + 1] * load(wt + unit[t + 1] * H + c0);
            a2 += hv[t + 2] * load(wt + unit[t + 2] * H + c0);
            a3 += hv[t + 3] * load(wt + unit[t + 3] * H + c0);
        }
        for (; t < n; t++) a0 += hv[t] * load(wt + unit[t] * H + c0);
        store(acc + c0, (a0 + a1) + (a2 + a3));
    }
}

/* Lane i of the result is the sum of the lanes of v_i: sixteen sums in fifteen steps of two shuffles and one
 * addition, a tree that halves the lanes per vector at each level, instead of sixteen separate reductions. */
static inline v16 pair_sum(v16 x, v16 y, i16 lo, i16 hi) {
    return __builtin_shuffle(x, y, lo) + __builtin_shuffle(x, y, hi);
}

static v16 sum16(v16 v0, v16 v1, v16 v2, v16 v3, v16 v4, v16 v5, v16 v6, v16 v7,
                 v16 v8, v16 v9, v16 v10, v16 v11, v16 v12, v16 v13, v16 v14, v16 v15) {
    const i16 l1 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    const i16 h1 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
    const i16 l2 = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
    const i16 h2 = {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31};
    const i16 l3 = {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29};
    const i16 h3 = {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31};
    const i16 l4 = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    const i16 h4 = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
    const v16 s0 = pair_sum(v0, v1, l1, h1), s1 = pair_sum(v2, v3, l1, h1), s2 = pair_sum(v4, v5, l1, h1);
    const v16 s3 = pair_sum(v6, v7, l1, h1), s4 = pair_sum(v8, v9, l1, h1), s5 = pair_sum(v10, v11, l1, h1);
    const v16 s6 = pair_sum(v12, v13, l1, h1), s7 = pair_sum(v14, v15, l1, h1);
    const v16 t0 = pair_sum(s0, s1, l2, h2), t1 = pair_sum(s2, s3, l2, h2);
    const v16 t2 = pair_sum(s4, s5, l2, h2), t3 = pair_sum(s6, s7, l2, h2);
    const v16 u0 = pair_sum(t0, t1, l3, h3), u1 = pair_sum(t2, t3, l3, h3);
    return pair_sum(u0, u1, l4, h4);
}

/* logits[p][o] = bout[o] + wout[o, :] . act[p] for four (lesion, input) pairs p at once and o < n_out, in blocks of
 * four outputs: each load of wout then feeds four fused multiply-adds and each load of an activation four more, where one lesion
 * and one output at a time would load twice per multiply-add. wout has its rows padded with zeros to a multiple of
 * four. */
static void output_block(const float *wout, const float *bout, int64_t H, int64_t n_out, const float *const act[4],
                         float logits[4][MAX_OUT]) {
    for (int64_t o0 = 0; o0 < n_out; o0 += 4) {
        const float *w = wout + o0 * H;
        /* sixteen named accumulators, d<lesion><output>: an array of them would live on the stack */
        v16 d00 = {0}, d01 = {0}, d02 = {0}, d03 = {0}, d10 = {0}, d11 = {0}, d12 = {0}, d13 = {0};
        v16 d20 = {0}, d21 = {0}, d22 = {0}, d23 = {0}, d30 = {0}, d31 = {0}, d32 = {0}, d33 = {0};
#pragma GCC unroll 1 /* unrolled, the sixteen accumulators no longer fit the registers */
        for (int64_t c = 0; c < H; c += 16) {
            const v16 a0 = load(act[0] + c), a1 = load(act[1] + c), a2 = load(act[2] + c), a3 = load(act[3] + c);
            v16 wk = load(w + c);
            d00 += wk * a0;  d10 += wk * a1;  d20 += wk * a2;  d30 += wk * a3;
            wk = load(w + H + c);
            d01 += wk * a0;  d11 += wk * a1;  d21 += wk * a2;  d31 += wk * a3;
            wk = load(w + 2 * H + c);
            d02 += wk * a0;  d12 += wk * a1;  d22 += wk * a2;  d32 += wk * a3;
            wk = load(w + 3 * H + c);
            d03 += wk * a0;  d13 += wk * a1;  d23 += wk * a2;  d33 += wk * a3;
        }
        float sums[16] __attribute__((aligned(64)));
        store(sums, sum16(d00, d01, d02, d03, d10, d11, d12, d13, d20, d21, d22, d23, d30, d31, d32, d33));
        for (int p = 0; p < 4; p++)
            for (int64_t k = 0; k < 4 && o0 + k < n_out; k++) logits[p][o0 + k] = bout[o0 + k] + sums[4 * p + k];
    }
}

static int64_t first_argmax(const float *v, int64_t n) {
#if defined(__AVX512F__)
    if (n <= 16) {  /* one vector: the maximum, then the first lane that holds it */
        const __mmask16 lanes = (__mmask16)((1u << n) - 1u);
        const __m512 x = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), lanes, v);
        const __mmask16 top = _mm512_cmp_ps_mask(x, _mm512_set1_ps(_mm512_reduce_max_ps(x)), _CMP_EQ_OQ);
        return __builtin_ctz((unsigned)(top & lanes));
    }
#endif
    int64_t best = 0;
    for (int64_t k = 1; k < n; k++)
        if (v[k] > v[best]) best = k;
    return best;
}

/* The units of one lesion row whose value in hb is not zero, with their values; returns how many. unit and hv have
 * room for 8 more entries than valid (the vector path stores whole vectors). */
static int64_t nonzero_units(const int64_t *ix, int64_t valid, const float *hb, int64_t *unit, float *hv) {
    int64_t n = 0, t = 0;
#if defined(__AVX512F__) && defined(__AVX512VL__)
    for (; t + 8 <= valid; t += 8) {  /* gather eight values, keep the lanes that are not zero */
        const __m512i units = _mm512_loadu_si512((const void *)(ix + t));
        const __m256 values = _mm512_i64gather_ps(units, hb, 4);
        const __mmask8 keep = _mm256_cmp_ps_mask(values, _mm256_setzero_ps(), _CMP_NEQ_UQ);
        _mm512_storeu_si512((void *)(unit + n), _mm512_maskz_compress_epi64(keep, units));
        _mm256_storeu_ps(hv + n, _mm256_maskz_compress_ps(keep, values));
        n += __builtin_popcount((unsigned)keep);
    }
#endif
    for (; t < valid; t++) {  /* branch-free: a ReLU's zeros are too random to predict */
        const int64_t i = ix[t];
        const float v = hb[i];
        unit[n] = i;
        hv[n] = v;
        n += v != 0.0f;
    }
    return n;
}

/* Lesions m0 <= m < m1 over all B inputs; counts is (M x n_classes), rows m0..m1-1 are written by this call only.
 * base_stride is H for a per-input base (delta form) and 0 for one shared row (complement form); sign is -1 or +1.
 * wout/bout may be NULL (no hidden step: the Linear is the output layer, then out_width == H). */
int64_t lesion_counts(int64_t m0, int64_t m1, int64_t B, int64_t C, int64_t H, int64_t s,
                      const float *h, const float *wt, const int64_t *idx,
                      const float *base, int64_t base_stride, float sign,
                      const float *wout, const float *bout, int64_t out_width, int64_t n_out,
                      const int64_t *y, int64_t n_classes, int64_t *counts) {
    if (wout != NULL && n_out > MAX_OUT) return -1;
    float acc[4][H] __attribute__((aligned(64)));
    float logits[4][MAX_OUT > out_width ? MAX_OUT : out_width] __attribute__((aligned(64)));
    float hv[s + 8];
    int64_t unit[s + 8];
    /* Tiles of inputs outer, then lesions, then the tile's inputs: the rows of wt that one lesion reads (a few KiB)
     * stay in L1 across the tile, the tile's h and base rows stay in L2 across the lesions, and four inputs at a
     * time share the loads of the last Linear. */
    for (int64_t tile = 0; tile < B; tile += INPUT_TILE)
    for (int64_t m = m0; m < m1; m++) {
        const int64_t *ix = idx + m * s;
        const int64_t end = B < tile + INPUT_TILE ? B : tile + INPUT_TILE;
        int64_t valid = s;
        while (valid > 0 && ix[valid - 1] >= C) valid--;  /* the padding sits at the end of a row */
        for (int64_t b0 = tile; b0 < end; b0 += 4) {
            const int64_t nb = end - b0 < 4 ? end - b0 : 4;
            for (int64_t p = 0; p < nb; p++) {
                const float *hb = h + (b0 + p) * C;
                const float *zb = base + (b0 + p) * base_stride;
                if (H == 16) {  /* one vector per unit: cheaper to multiply the zeros than to sort them out */
                    v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
                    int64_t t = 0;
                    for (; t + 4 <= valid; t += 4) {
                        a0 += hb[ix[t]] * load(wt + ix[t] * 16);
                        a1 += hb[ix[t + 1]] * load(wt + ix[t + 1] * 16);
                        a2 += hb[ix[t + 2]] * load(wt + ix[t + 2] * 16);
                        a3 += hb[ix[t + 3]] * load(wt + ix[t + 3] * 16);
                    }
                    for (; t < valid; t++) a0 += hb[ix[t]] * load(wt + ix[t] * 16);
                    store(acc[p], (a0 + a1) + (a2 + a3));
                } else {
                    gather_axpy(wt, H, unit, hv, nonzero_units(ix, valid, hb, unit, hv), acc[p]);
                }
                if (wout == NULL) {
                    for (int64_t c = 0; c < H; c += 16) store(logits[p] + c, load(zb + c) + sign * load(acc[p] + c));
                } else {
                    for (int64_t c = 0; c < H; c += 16)
                        store(acc[p] + c, relu(load(zb + c) + sign * load(acc[p] + c)));
                }
            }
            if (wout != NULL) {
                const float *act[4];
                for (int64_t p = 0; p < 4; p++) act[p] = acc[p < nb ? p : 0];  /* a short block repeats input 0 */
                output_block(wout, bout, H, n_out, act, logits);
            }
            for (int64_t p = 0; p < nb; p++) {
                const int64_t label = y[b0 + p];
                if (first_argmax(logits[p], n_out) == label) counts[m * n_classes + label] += 1;
            }
        }
    }
    return 0;
}


/* ---- Two hidden steps: delta -> ReLU -> Linear (H -> H2) -> ReLU -> Linear -> argmax, the Linear H -> H2 on AMX ----
 *
 * A lesion two layers before the last hidden one needs a dense H x H2 product per (lesion, input), the bulk of the
 * work. Here it runs on the AMX tile unit in bfloat16 with float32 accumulation, split three ways so that it keeps
 * about 16 bits: a = a_hi + a_lo and w = w_hi + w_lo (each part bfloat16, rounded to nearest), and
 * a.w ~ a_hi.w_hi + a_lo.w_hi + a_hi.w_lo. That is not float32, so every prediction is certified: with the bound
 * E = coef_h * sum(a) + coef_h2 * sum(relu(z)) + coef_abs on the error of each logit against exact arithmetic from
 * the same a (derived and computed in neuronmap.service.native), a prediction stands when its logit leads every other
 * one by more than 2E; otherwise that pair is recomputed in float32 (about 1 % of pairs). So a certified prediction
 * is the exact one, and the rest are float32 like the other kernels.
 *
 * Layout: w2hi and w2lo are the Linear's weight in tiles of 32 inputs x 16 outputs, pairs of inputs interleaved
 * (AMX's VNNI layout: [k/32][n/16][16 rows of (16 outputs x 2 inputs)]); w2t is the float32 weight transposed
 * (H x H2) for the fallback; H and H2 are multiples of 32 (zero padding).
 */
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
#include <sys/syscall.h>
#include <unistd.h>

#define ROWS 32 /* (lesion, input) pairs per pass: two row blocks of AMX tiles */

struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* Round to bfloat16 (nearest even) and keep the remainder's rounding too: a ~ hi + lo. */
static inline void split_row(const float *a, int64_t n, uint16_t *hi, uint16_t *lo) {
    for (int64_t c = 0; c < n; c += 16) {
        const __m512 v = _mm512_loadu_ps(a + c);
        const __m256bh h = _mm512_cvtneps_pbh(v);
        const __m512 back = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)h), 16));
        _mm256_storeu_si256((__m256i *)(hi + c), (__m256i)h);
        _mm256_storeu_si256((__m256i *)(lo + c), (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(v, back)));
    }
}

/* out[0:32, 0:H2] = ahi.(whi + wlo) + alo.whi over K inputs. Tiles 0-3 accumulate two row blocks x two column
 * blocks, so that each weight tile loaded (from L2: all of them are 2 x H x H2 x 2 bytes) serves 32 rows; per 32
 * inputs the three products need eight tile loads: A and B in the lo.hi order, then A hi, then B lo. */
static void tile_product(const uint16_t *ahi, const uint16_t *alo, int64_t K, const uint16_t *whi,
                         const uint16_t *wlo, int64_t H2, float *out) {
    const int64_t nblocks = H2 / 16, stride = K * 2;
    const uint16_t *ahi1 = ahi + 16 * K, *alo1 = alo + 16 * K;
    for (int64_t nb = 0; nb < nblocks; nb += 2) {
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        for (int64_t kb = 0; kb < K / 32; kb++) {
            const int64_t at = (kb * nblocks + nb) * 512; /* one B tile is 16 x 32 bfloat16 */
#define NM_PRODUCTS _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
            _tile_loadd(4, alo + kb * 32, stride);
            _tile_loadd(5, alo1 + kb * 32, stride);
            _tile_loadd(6, whi + at, 64);
            _tile_loadd(7, whi + at + 512, 64);
            NM_PRODUCTS
            _tile_loadd(4, ahi + kb * 32, stride);
            _tile_loadd(5, ahi1 + kb * 32, stride);
            NM_PRODUCTS
            _tile_loadd(6, wlo + at, 64);
            _tile_loadd(7, wlo + at + 512, 64);
            NM_PRODUCTS
#undef NM_PRODUCTS
        }
        _tile_stored(0, out + nb * 16, H2 * 4);
        _tile_stored(1, out + nb * 16 + 16, H2 * 4);
        _tile_stored(2, out + 16 * H2 + nb * 16, H2 * 4);
        _tile_stored(3, out + 16 * H2 + nb * 16 + 16, H2 * 4);
    }
}

/* Every tile: 16 rows of 64 bytes (16 float32 accumulators, 32 bfloat16 inputs, or 16 pairs of inputs). */
static void configure_tiles(void) {
    struct tile_config config = {0};
    config.palette = 1;
    for (int t = 0; t < 8; t++) {
        config.rows[t] = 16;
        config.colsb[t] = 64;
    }
    _tile_loadconfig(&config);
}

/* The hidden product alone, out (32 x H2) = split(a) . split(w) for 32 rows a (32 x H), as lesion_counts_deep
 * computes it: for checking the split, the tile layout and the three products against an emulation. */
int64_t amx_hidden_product(int64_t H, int64_t H2, const float *a, const uint16_t *whi, const uint16_t *wlo,
                           float *out) {
    if (H % 32 || H2 % 32) return -1;
    uint16_t *ahi = aligned_alloc(64, sizeof(uint16_t[ROWS][H])), *alo = aligned_alloc(64, sizeof(uint16_t[ROWS][H]));
    if (!ahi || !alo) {
        free(ahi); free(alo);
        return -2;
    }
    for (int64_t p = 0; p < ROWS; p++) split_row(a + p * H, H, ahi + p * H, alo + p * H);
    configure_tiles();
    tile_product(ahi, alo, H, whi, wlo, H2, out);
    _tile_release();
    free(ahi); free(alo);
    return 0;
}

/* The nonzero entries of a row (a ReLU output): their indices and values; returns how many. */
static int64_t nonzero_columns(const float *a, int64_t n, int64_t *unit, float *hv) {
    int64_t k = 0;
    for (int64_t c = 0; c < n; c++) {
        unit[k] = c;
        hv[k] = a[c];
        k += a[c] != 0.0f;
    }
    return k;
}

int64_t lesion_counts_deep(int64_t m0, int64_t m1, int64_t B, int64_t C, int64_t H, int64_t s,
                           const float *h, const float *wt, const int64_t *idx,
                           const float *base, int64_t base_stride, float sign,
                           const uint16_t *w2hi, const uint16_t *w2lo, const float *w2t, const float *b2, int64_t H2,
                           const float *wout, const float *bout, int64_t n_out,
                           float coef_h, float coef_h2, float coef_abs,
                           const int64_t *y, int64_t n_classes, int64_t *counts, int64_t *fallbacks) {
    if (n_out > MAX_OUT || H % 32 || H2 % 32) return -1;
    /* scratch on the heap: a wide layer's 32 rows would not fit a thread's stack */
    float (*act)[H] = aligned_alloc(64, sizeof(float[ROWS][H]));
    float (*out)[H2] = aligned_alloc(64, sizeof(float[ROWS][H2]));
    uint16_t (*ahi)[H] = aligned_alloc(64, sizeof(uint16_t[ROWS][H]));
    uint16_t (*alo)[H] = aligned_alloc(64, sizeof(uint16_t[ROWS][H]));
    float *z = aligned_alloc(64, sizeof(float[H2]));
    const int64_t most = s > H ? s : H;
    float *hv = malloc(sizeof(float[most + 8]));
    int64_t *unit = malloc(sizeof(int64_t[most + 8]));
    if (!act || !out || !ahi || !alo || !z || !hv || !unit) {
        free(act); free(out); free(ahi); free(alo); free(z); free(hv); free(unit);
        return -2;
    }
    float logits[ROWS][MAX_OUT] __attribute__((aligned(64)));
    float sum_a[ROWS], sum_z[ROWS];
    int finite[ROWS];
    configure_tiles();
    int64_t fell_back = 0;
    for (int64_t tile = 0; tile < B; tile += INPUT_TILE)
    for (int64_t m = m0; m < m1; m++) {
        const int64_t *ix = idx + m * s;
        const int64_t end = B < tile + INPUT_TILE ? B : tile + INPUT_TILE;
        int64_t valid = s;
        while (valid > 0 && ix[valid - 1] >= C) valid--;
        for (int64_t b0 = tile; b0 < end; b0 += ROWS) {
            const int64_t nb = end - b0 < ROWS ? end - b0 : ROWS;
            for (int64_t p = 0; p < ROWS; p++) {
                if (p >= nb) {  /* a short block: zero rows, their results are ignored */
                    for (int64_t c = 0; c < H; c++) act[p][c] = 0.0f;
                } else {
                    const float *hb = h + (b0 + p) * C;
                    const float *zb = base + (b0 + p) * base_stride;
                    gather_axpy(wt, H, unit, hv, nonzero_units(ix, valid, hb, unit, hv), act[p]);
                    v16 total = {0};
                    for (int64_t c = 0; c < H; c += 16) {
                        const v16 a = relu(load(zb + c) + sign * load(act[p] + c));
                        store(act[p] + c, a);
                        total += a;
                    }
                    sum_a[p] = _mm512_reduce_add_ps((__m512)total);
                }
                split_row(act[p], H, ahi[p], alo[p]);
            }
            tile_product(&ahi[0][0], &alo[0][0], H, w2hi, w2lo, H2, &out[0][0]);
            for (int64_t p = 0; p < nb; p++) {
                v16 total = {0}, poison = {0};
                for (int64_t c = 0; c < H2; c += 16) {
                    const v16 pre = load(out[p] + c) + load(b2 + c);
                    poison += pre * 0.0f;  /* NaN once any value is not finite (the ReLU below hides it) */
                    const v16 z = relu(pre);
                    store(out[p] + c, z);
                    total += z;
                }
                sum_z[p] = _mm512_reduce_add_ps((__m512)total);
                finite[p] = _mm512_reduce_add_ps((__m512)poison) == 0.0f;
            }
            for (int64_t p = 0; p < nb; p += 4) {
                const float *rows[4];
                for (int64_t q = 0; q < 4; q++) rows[q] = out[p + q < nb ? p + q : p];
                output_block(wout, bout, H2, n_out, rows, (float (*)[MAX_OUT])logits[p]);
            }
            for (int64_t p = 0; p < nb; p++) {
                const int64_t top = first_argmax(logits[p], n_out);
                float second = -INFINITY;
                for (int64_t k = 0; k < n_out; k++)
                    if (k != top && logits[p][k] > second) second = logits[p][k];
                const float bound = coef_h * sum_a[p] + coef_h2 * sum_z[p] + coef_abs;
                const int certified = n_out == 1 || (finite[p] && isfinite(logits[p][top]) && isfinite(second)
                                                     && logits[p][top] - second > 2.0f * bound);
                int64_t pred = top;
                if (!certified) {  /* float32 for this pair */
                    fell_back++;
                    gather_axpy(w2t, H2, unit, hv, nonzero_columns(act[p], H, unit, hv), z);
                    for (int64_t c = 0; c < H2; c += 16) store(z + c, relu(load(z + c) + load(b2 + c)));
                    const float *rows[4] = {z, z, z, z};
                    float exact[4][MAX_OUT] __attribute__((aligned(64)));
                    output_block(wout, bout, H2, n_out, rows, exact);
                    pred = first_argmax(exact[0], n_out);
                }
                const int64_t label = y[b0 + p];
                if (pred == label) counts[m * n_classes + label] += 1;
            }
        }
    }
    _tile_release();
    free(act); free(out); free(ahi); free(alo); free(z); free(hv); free(unit);
    *fallbacks = fell_back;
    return 0;
}

/* Asks Linux for the AMX tile state (once per process); 1 when this build and the OS both allow AMX. */
int64_t enable_amx(void) {
    const long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}
#else
int64_t enable_amx(void) { return 0; }
#endif


/* Whether this build has AVX-512: without it the 16-lane vectors are emulated and torch is faster. */
int64_t has_avx512(void) {
#if defined(__AVX512F__) && defined(__AVX512VL__)
    return 1;
#else
    return 0;
#endif
}
