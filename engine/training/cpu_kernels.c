/* Fused CPU kernels for the batched proxy trainer (engine/training/cpu_kernels.py builds and loads them).

   Tiny proxies spend as much time in memory-bound elementwise passes as in matmuls. Each kernel here
   does in one pass over its rows what PyTorch's eager ops do in several, on the tensors' own memory
   (the Python side passes data pointers of contiguous tensors). Rows are split among OpenMP threads;
   the library links the OpenMP runtime PyTorch already loaded, so both share one thread pool.

   Arithmetic is float32 throughout; bfloat16 values are read and written with round-to-nearest-even,
   the rounding PyTorch uses, so outputs match the eager ops up to float32 rounding order. */

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint16_t bf16;

static inline float bf16_to_float(bf16 b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline bf16 float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t quiet_nan = (u >> 16) | 0x40u;
    return (bf16)(((u & 0x7fffffffu) > 0x7f800000u) ? quiet_nan : rounded);
}

/* exp(x) in float32 within ~1 ulp, written so that loops over it vectorise: x = n ln2 + r with
   |r| <= ln2 / 2, a degree-6 polynomial for exp(r), 2^n from the exponent bits. */
static inline float exp_f32(float x) {
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.7f ? 88.7f : x;
    float n = rintf(x * 1.44269504088896341f);
    float r = fmaf(n, -0.693145751953125f, x);
    r = fmaf(n, -1.428606765330187e-06f, r);
    float p = 1.3981999507e-3f;
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p * r, r, r) + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

static void load_row(const void *src, int is_bf16, float *dst, int64_t n) {
    if (is_bf16) {
        const bf16 *s = (const bf16 *)src;
        #pragma omp simd
        for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_float(s[i]);
    } else {
        memcpy(dst, src, sizeof(float) * n);
    }
}

static void store_row(void *dst, int is_bf16, const float *src, int64_t n) {
    if (is_bf16) {
        bf16 *d = (bf16 *)dst;
        #pragma omp simd
        for (int64_t i = 0; i < n; i++) d[i] = float_to_bf16(src[i]);
    } else {
        memcpy(dst, src, sizeof(float) * n);
    }
}

static inline void *row_at(void *base, int is_bf16, int64_t index) {
    return (char *)base + index * (is_bf16 ? 2 : 4);
}

/* RMSNorm forward over rows of D: out = (s * inv_rms) * w[k] in float32 or bfloat16 with
   s = x (float32 [K, N, D]), or s = x + delta when delta is given (float32 or bfloat16; s is then
   written to sum, the residual stream's next value), and inv_rms [K, N] = 1 / sqrt(mean(s^2) + eps). */
void olmix_rmsnorm_forward(const float *x, const void *delta, int delta_bf16, float *sum, const float *w,
                           void *out, int out_bf16, float *inv_rms, int64_t K, int64_t N, int64_t D, float eps,
                           int threads) {
    #pragma omp parallel num_threads(threads)
    {
        float *row = malloc(sizeof(float) * D);
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < K * N; r++) {
            const float *xr = x + r * D, *wr = w + (r / N) * D;
            if (delta) {
                float *sr = sum + r * D;
                load_row(row_at((void *)delta, delta_bf16, r * D), delta_bf16, row, D);
                #pragma omp simd
                for (int64_t d = 0; d < D; d++) sr[d] = xr[d] + row[d];
                xr = sr;
            }
            float sum_sq = 0.f;
            #pragma omp simd reduction(+ : sum_sq)
            for (int64_t d = 0; d < D; d++) sum_sq += xr[d] * xr[d];
            float inv = 1.0f / sqrtf(sum_sq / (float)D + eps);
            inv_rms[r] = inv;
            #pragma omp simd
            for (int64_t d = 0; d < D; d++) row[d] = (xr[d] * inv) * wr[d];
            store_row(row_at(out, out_bf16, r * D), out_bf16, row, D);
        }
        free(row);
    }
}

/* RMSNorm backward from the output gradient g (float32 or bfloat16), s the normed input:
   grad_s = inv * (g w - n mean(g w n)) with n = s * inv, plus grad_residual (float32) when given
   (the gradient s receives from its other uses), and grad_w [K, D] = sum over N of g n.
   scratch holds threads x K x D floats (each thread's share of grad_w, summed in thread order so
   the result does not depend on timing). */
void olmix_rmsnorm_backward(const void *g, int g_bf16, const float *grad_residual, const float *s,
                            const float *inv_rms, const float *w, float *grad_s, float *grad_w, float *scratch,
                            int64_t K, int64_t N, int64_t D, int threads) {
    memset(scratch, 0, sizeof(float) * threads * K * D);
    #pragma omp parallel num_threads(threads)
    {
        float *mine = scratch + (int64_t)omp_get_thread_num() * K * D;
        float *gr = malloc(sizeof(float) * D);
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < K * N; r++) {
            int64_t k = r / N;
            const float *sr = s + r * D, *wr = w + k * D;
            float *gs = grad_s + r * D, *gw = mine + k * D;
            float inv = inv_rms[r];
            load_row(row_at((void *)g, g_bf16, r * D), g_bf16, gr, D);
            float dot = 0.f;
            #pragma omp simd reduction(+ : dot)
            for (int64_t d = 0; d < D; d++) {
                float normed = sr[d] * inv;
                dot += gr[d] * wr[d] * normed;
                gw[d] += gr[d] * normed;
            }
            float mean = dot / (float)D;
            const float *res = grad_residual ? grad_residual + r * D : NULL;
            #pragma omp simd
            for (int64_t d = 0; d < D; d++)
                gs[d] = (res ? res[d] : 0.f) + inv * (gr[d] * wr[d] - (sr[d] * inv) * mean);
        }
        free(gr);
    }
    for (int64_t i = 0; i < K * D; i++) {
        float total = 0.f;
        for (int t = 0; t < threads; t++) total += scratch[(int64_t)t * K * D + i];
        grad_w[i] = total;
    }
}

/* Next-token cross-entropy from logits [R, V] (float32 or bfloat16), in place: each row becomes the
   gradient of its loss with respect to the logits, softmax - one-hot, where the target's entry
   p - 1 is written as minus the sum of the other probabilities (exact also when p is near 1);
   nll[r] = logsumexp(row) - row[target], in float32 (NaN, row untouched, for a target outside 0..V-1). */
void olmix_softmax_xent_forward(void *logits, int is_bf16, const int64_t *targets, float *nll, int64_t R,
                                int64_t V, int threads) {
    #pragma omp parallel num_threads(threads)
    {
        float *row = malloc(sizeof(float) * V);
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < R; r++) {
            void *src = row_at(logits, is_bf16, r * V);
            load_row(src, is_bf16, row, V);
            int64_t t = targets[r];
            if (t < 0 || t >= V) { /* not a token of this vocabulary: no loss to take */
                nll[r] = NAN;
                continue;
            }
            float top = -INFINITY;
            #pragma omp simd reduction(max : top)
            for (int64_t j = 0; j < V; j++) top = row[j] > top ? row[j] : top;
            float target_logit = row[t], sum = 0.f;
            #pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < V; j++) {
                row[j] = exp_f32(row[j] - top);
                sum += row[j];
            }
            nll[r] = logf(sum) + top - target_logit;
            float inv = 1.0f / sum, others = 0.f;
            #pragma omp simd reduction(+ : others)
            for (int64_t j = 0; j < V; j++) {
                row[j] *= inv;
                others += j == t ? 0.f : row[j];
            }
            row[t] = -others;
            store_row(src, is_bf16, row, V);
        }
        free(row);
    }
}

/* Causal softmax of attention scores, in place: scores [M, T, T] (bfloat16, q . k per query row)
   become probabilities softmax(scale * scores) over keys j <= i of row i, and 0 for j > i. */
void olmix_causal_softmax_forward(bf16 *scores, int64_t M, int64_t T, float scale, int threads) {
    #pragma omp parallel num_threads(threads)
    {
        float *row = malloc(sizeof(float) * T);
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < M * T; r++) {
            bf16 *x = scores + r * T;
            int64_t n = r % T + 1;  /* keys this query may see */
            float top = -INFINITY, sum = 0.f;
            #pragma omp simd reduction(max : top)
            for (int64_t j = 0; j < n; j++) {
                row[j] = scale * bf16_to_float(x[j]);
                top = row[j] > top ? row[j] : top;
            }
            #pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < n; j++) {
                row[j] = exp_f32(row[j] - top);
                sum += row[j];
            }
            float inv = 1.0f / sum;
            #pragma omp simd
            for (int64_t j = 0; j < n; j++) x[j] = float_to_bf16(row[j] * inv);
            memset(x + n, 0, sizeof(bf16) * (T - n));
        }
        free(row);
    }
}

/* Its backward: grad_scores = scale * p * (g - sum_j p_j g_j) over j <= i, 0 above the diagonal
   (probs, grad and grad_scores [M, T, T] bfloat16). */
void olmix_causal_softmax_backward(const bf16 *probs, const bf16 *grad, bf16 *grad_scores, int64_t M, int64_t T,
                                   float scale, int threads) {
    #pragma omp parallel num_threads(threads)
    {
        float *p = malloc(sizeof(float) * T), *g = malloc(sizeof(float) * T);
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < M * T; r++) {
            int64_t n = r % T + 1;
            const bf16 *pr = probs + r * T, *gr = grad + r * T;
            bf16 *out = grad_scores + r * T;
            float dot = 0.f;
            #pragma omp simd reduction(+ : dot)
            for (int64_t j = 0; j < n; j++) {
                p[j] = bf16_to_float(pr[j]);
                g[j] = bf16_to_float(gr[j]);
                dot += p[j] * g[j];
            }
            #pragma omp simd
            for (int64_t j = 0; j < n; j++) out[j] = float_to_bf16(scale * p[j] * (g[j] - dot));
            memset(out + n, 0, sizeof(bf16) * (T - n));
        }
        free(p);
        free(g);
    }
}

/* RoPE and the heads-first layout of the bfloat16 CPU attention, forward: qk [B, T, 2H, hd] holds the
   q heads then the k heads with rotation pairs adjacent; rotation [T, hd/2] holds (cos, sin) pairs.
   out [2, B, H, T, hd] receives rotated q then k. */
void olmix_rope_heads_first_forward(const bf16 *qk, const float *rotation, bf16 *out, int64_t B, int64_t T,
                                    int64_t H, int64_t hd, int threads) {
    #pragma omp parallel for collapse(2) num_threads(threads) schedule(static)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t t = 0; t < T; t++) {
            const float *rot = rotation + t * hd;
            for (int64_t g = 0; g < 2 * H; g++) {
                const bf16 *src = qk + ((b * T + t) * 2 * H + g) * hd;
                bf16 *dst = out + ((((g / H) * B + b) * H + g % H) * T + t) * hd;
                #pragma omp simd
                for (int64_t i = 0; i < hd / 2; i++) {
                    float re = bf16_to_float(src[2 * i]), im = bf16_to_float(src[2 * i + 1]);
                    float c = rot[2 * i], s = rot[2 * i + 1];
                    dst[2 * i] = float_to_bf16(re * c - im * s);
                    dst[2 * i + 1] = float_to_bf16(re * s + im * c);
                }
            }
        }
    }
}

/* Its backward: grad_q, grad_k [B, H, T, hd] -> grad_qk [B, T, 2H, hd], rotated back (conjugate). */
void olmix_rope_heads_first_backward(const bf16 *grad_q, const bf16 *grad_k, const float *rotation,
                                     bf16 *grad_qk, int64_t B, int64_t T, int64_t H, int64_t hd, int threads) {
    #pragma omp parallel for collapse(2) num_threads(threads) schedule(static)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t t = 0; t < T; t++) {
            const float *rot = rotation + t * hd;
            for (int64_t g = 0; g < 2 * H; g++) {
                const bf16 *src = (g < H ? grad_q : grad_k) + (((b * H) + g % H) * T + t) * hd;
                bf16 *dst = grad_qk + ((b * T + t) * 2 * H + g) * hd;
                #pragma omp simd
                for (int64_t i = 0; i < hd / 2; i++) {
                    float re = bf16_to_float(src[2 * i]), im = bf16_to_float(src[2 * i + 1]);
                    float c = rot[2 * i], s = rot[2 * i + 1];
                    dst[2 * i] = float_to_bf16(re * c + im * s);
                    dst[2 * i + 1] = float_to_bf16(im * c - re * s);
                }
            }
        }
    }
}

#define ADAMW_CHUNK 16384

/* Job `job` of olmix_adamw_clip: tensor i, proxy k, elements lo..hi of that proxy's slice. Jobs
   run over tensors, then proxies, then chunks of at most ADAMW_CHUNK elements (job_start[i]: the
   first job of tensor i). */
static inline void adamw_job(int64_t job, const int64_t *job_start, const int64_t *numel, int64_t *i, int64_t *k,
                             int64_t *lo, int64_t *hi) {
    int64_t t = 0;
    while (job_start[t + 1] <= job) t++;
    int64_t chunks = (numel[t] + ADAMW_CHUNK - 1) / ADAMW_CHUNK, local = job - job_start[t];
    *i = t;
    *k = local / chunks;
    *lo = (local % chunks) * ADAMW_CHUNK;
    *hi = *lo + ADAMW_CHUNK < numel[t] ? *lo + ADAMW_CHUNK : numel[t];
}

/* Per-proxy gradient clipping and AdamW for stacked parameters: tensor i is [K, numel[i]] float32
   (proxy-major) with its gradient in float32 or bfloat16 (grad_bf16[i]) and, when working[i] is not
   NULL, a bfloat16 copy of the updated weights to write there (what the next forward multiplies).
   Pass 1 takes each proxy's gradient norm over all tensors; pass 2 runs torch's AdamW update
   (decoupled weight decay, bias-corrected moments) on each proxy's gradient scaled by
   min(1, max_norm / (norm + 1e-6)), as clip_grad_norm_ would on that proxy alone (max_norm <= 0:
   no clipping). norms[K] receives the norms; scratch holds threads x K doubles. */
void olmix_adamw_clip(int64_t n_tensors, float *const *params, void *const *grads, const int32_t *grad_bf16,
                      float *const *exp_avg, float *const *exp_avg_sq, bf16 *const *working, const int64_t *numel,
                      const float *weight_decay, int64_t K, double lr, double beta1, double beta2, double eps,
                      double step_size, double bias_correction2_sqrt, double max_norm, float *norms,
                      double *scratch, int threads) {
    int64_t jobs = 0;
    int64_t *job_start = malloc(sizeof(int64_t) * (n_tensors + 1));
    for (int64_t i = 0; i < n_tensors; i++) {
        job_start[i] = jobs;
        jobs += K * ((numel[i] + ADAMW_CHUNK - 1) / ADAMW_CHUNK);
    }
    job_start[n_tensors] = jobs;
    float *coef = malloc(sizeof(float) * K);
    memset(scratch, 0, sizeof(double) * threads * K);
    #pragma omp parallel num_threads(threads)
    {
        double *mine = scratch + (int64_t)omp_get_thread_num() * K;
        #pragma omp for schedule(static)
        for (int64_t job = 0; job < jobs; job++) {
            int64_t i, k, lo, hi;
            adamw_job(job, job_start, numel, &i, &k, &lo, &hi);
            float sum_sq = 0.f;
            if (grad_bf16[i]) {
                const bf16 *g = (const bf16 *)grads[i] + k * numel[i];
                #pragma omp simd reduction(+ : sum_sq)
                for (int64_t j = lo; j < hi; j++) sum_sq += bf16_to_float(g[j]) * bf16_to_float(g[j]);
            } else {
                const float *g = (const float *)grads[i] + k * numel[i];
                #pragma omp simd reduction(+ : sum_sq)
                for (int64_t j = lo; j < hi; j++) sum_sq += g[j] * g[j];
            }
            mine[k] += sum_sq;
        }
        #pragma omp single
        for (int64_t k = 0; k < K; k++) {
            double sum_sq = 0.0;
            for (int t = 0; t < threads; t++) sum_sq += scratch[t * K + k];
            norms[k] = (float)sqrt(sum_sq);
            double c = max_norm / ((double)norms[k] + 1e-6);
            coef[k] = (max_norm > 0.0 && c < 1.0) ? (float)c : 1.0f;
        }
        #pragma omp for schedule(static)
        for (int64_t job = 0; job < jobs; job++) {
            int64_t i, k, lo, hi;
            adamw_job(job, job_start, numel, &i, &k, &lo, &hi);
            int64_t offset = k * numel[i];
            float *p = params[i] + offset, *m = exp_avg[i] + offset, *v = exp_avg_sq[i] + offset;
            float row[ADAMW_CHUNK];
            if (grad_bf16[i]) {
                const bf16 *g = (const bf16 *)grads[i] + offset;
                #pragma omp simd
                for (int64_t j = lo; j < hi; j++) row[j - lo] = bf16_to_float(g[j]);
            } else {
                memcpy(row, (const float *)grads[i] + offset + lo, sizeof(float) * (hi - lo));
            }
            float clip = coef[k], keep = (float)(1.0 - lr * weight_decay[i]);
            float w1 = (float)(1.0 - beta1), b2 = (float)beta2, w2 = (float)(1.0 - beta2);
            float step = (float)step_size, bc2 = (float)bias_correction2_sqrt, epsilon = (float)eps;
            #pragma omp simd
            for (int64_t j = lo; j < hi; j++) {
                float grad = row[j - lo] * clip;
                float mean = m[j] + w1 * (grad - m[j]);
                float var = v[j] * b2 + w2 * grad * grad;
                m[j] = mean;
                v[j] = var;
                p[j] = p[j] * keep - step * mean / (sqrtf(var) / bc2 + epsilon);
            }
            if (working[i]) {
                bf16 *out = working[i] + offset;
                #pragma omp simd
                for (int64_t j = lo; j < hi; j++) out[j] = float_to_bf16(p[j]);
            }
        }
    }
    free(coef);
    free(job_start);
}
