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

/* logits[p][o] = bout[o] + wout[o, :] . act[p] for four (lesion, input) pairs p at once and o < n_out, in blocks of four outputs:
 * each load of wout then feeds four fused multiply-adds and each load of an activation four more, where one lesion
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


/* Whether this build has AVX-512: without it the 16-lane vectors are emulated and torch is faster. */
int64_t has_avx512(void) {
#if defined(__AVX512F__) && defined(__AVX512VL__)
    return 1;
#else
    return 0;
#endif
}
