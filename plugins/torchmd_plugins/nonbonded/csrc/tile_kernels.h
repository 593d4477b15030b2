// Tile kernels of the cluster-pair nonbonded code (no torch dependency, so they can be
// benchmarked standalone). See cluster_nonbonded.cpp for the data layout.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__) && !defined(TMD_NO_INTRINSICS)
#include <immintrin.h>
#define TMD_AVX2 1
#endif

#ifndef TMD_CLUSTER_SIZE
#define TMD_CLUSTER_SIZE 8
#endif

namespace tmd {

constexpr int M = TMD_CLUSTER_SIZE;

template <class T>
struct KernelParamsT {
  T rc2, rs, rc, inv_sw, krf, crf, ke;
  bool cutoff, sw;
};
using KernelParams = KernelParamsT<float>;

// One 8x8 tile in scalar type T (float or double). xi/xj: SoA x[8], y[8], z[8], q[8];
// forces SoA f[3][8]; the tile's LJ and electrostatic energies are added to e_lj, e_el.
template <class T, bool CUT, bool SW>
inline void tile_generic(const T* __restrict xi, const T* __restrict xj, const int32_t* __restrict ti,
                         const int32_t* __restrict tj, const T* __restrict c6t, const T* __restrict c12t,
                         int stride, uint64_t mask, const T sx, const T sy, const T sz, T* fi, T* fj,
                         const KernelParamsT<T>& kp, double& e_lj, double& e_el) {
  T xjs[M], yjs[M], zjs[M];
  for (int b = 0; b < M; ++b) {
    xjs[b] = xj[b] + sx;
    yjs[b] = xj[M + b] + sy;
    zjs[b] = xj[2 * M + b] + sz;
  }
  const T* qj = xj + 3 * M;
  T fjx[M] = {0}, fjy[M] = {0}, fjz[M] = {0};
  double lj_tile = 0.0, el_tile = 0.0;
  const T one = T(1), zero = T(0);
  for (int a = 0; a < M; ++a) {
    const uint32_t row = (uint32_t)(mask >> (a * M)) & 0xffu;
    if (!row) continue;
    const T xa = xi[a], ya = xi[M + a], za = xi[2 * M + a], qa = xi[3 * M + a] * kp.ke;
    const T* c6row = c6t + ti[a] * stride;
    const T* c12row = c12t + ti[a] * stride;
    T fxa = 0, fya = 0, fza = 0, ela = 0, eea = 0;
#pragma omp simd reduction(+ : fxa, fya, fza, ela, eea)
    for (int b = 0; b < M; ++b) {
      const T dx = xjs[b] - xa, dy = yjs[b] - ya, dz = zjs[b] - za;
      const T r2raw = dx * dx + dy * dy + dz * dz;
      bool on = (row >> b) & 1u;
      if (CUT) on = on && (r2raw < kp.rc2);
      const T r2 = on ? r2raw : one;
      const T inv_r2 = one / r2;
      const T inv_r = one / std::sqrt(r2);
      const T inv_r6 = inv_r2 * inv_r2 * inv_r2;
      const T c6 = c6row[tj[b]], c12 = c12row[tj[b]];
      const T c12r12 = c12 * inv_r6 * inv_r6, c6r6 = c6 * inv_r6;
      T elj = c12r12 - c6r6;
      T flj = (T(12) * c12r12 - T(6) * c6r6) * inv_r2;
      if (SW) {
        const T r = r2 * inv_r;
        const T x = std::min(one, std::max(zero, (r - kp.rs) * kp.inv_sw));
        const T s = one + x * x * x * (T(-10) + x * (T(15) - T(6) * x));
        const T ds = x * x * (T(-30) + x * (T(60) - T(30) * x)) * kp.inv_sw;
        flj = flj * s - elj * ds * inv_r;
        elj = elj * s;
      }
      const T qq = qa * qj[b];
      const T eel = qq * (inv_r + kp.krf * r2 - kp.crf);
      const T fel = qq * (inv_r * inv_r2 - T(2) * kp.krf);
      const T f = on ? flj + fel : zero;
      ela += on ? elj : zero;
      eea += on ? eel : zero;
      const T fx = f * dx, fy = f * dy, fz = f * dz;
      fxa -= fx;
      fya -= fy;
      fza -= fz;
      fjx[b] += fx;
      fjy[b] += fy;
      fjz[b] += fz;
    }
    fi[a] += fxa;
    fi[M + a] += fya;
    fi[2 * M + a] += fza;
    lj_tile += (double)ela;
    el_tile += (double)eea;
  }
  for (int b = 0; b < M; ++b) {
    fj[b] += fjx[b];
    fj[M + b] += fjy[b];
    fj[2 * M + b] += fjz[b];
  }
  e_lj += lj_tile;
  e_el += el_tile;
}


#ifdef TMD_AVX2
// 1/sqrt(x) to ~1e-7 relative: hardware estimate + one Newton step.
inline __m256 rsqrt_nr(__m256 x) {
#ifdef __AVX512VL__
  __m256 y = _mm256_rsqrt14_ps(x);
#else
  __m256 y = _mm256_rsqrt_ps(x);
#endif
  const __m256 half = _mm256_set1_ps(0.5f), three_half = _mm256_set1_ps(1.5f);
  __m256 hx = _mm256_mul_ps(half, x);
  return _mm256_mul_ps(y, _mm256_fnmadd_ps(hx, _mm256_mul_ps(y, y), three_half));
}

// Same contract as tile_generic, explicit 8-lane AVX2/FMA.
template <bool CUT, bool SW>
inline void tile(const float* __restrict xi, const float* __restrict xj, const int32_t* __restrict ti,
                 const int32_t* __restrict tj, const float* __restrict c6t, const float* __restrict c12t,
                 int stride, uint64_t mask, const float sx, const float sy, const float sz,
                 float* fi, float* fj, const KernelParams& kp, double& e_lj, double& e_el) {
  const __m256 xjv = _mm256_add_ps(_mm256_loadu_ps(xj), _mm256_set1_ps(sx));
  const __m256 yjv = _mm256_add_ps(_mm256_loadu_ps(xj + M), _mm256_set1_ps(sy));
  const __m256 zjv = _mm256_add_ps(_mm256_loadu_ps(xj + 2 * M), _mm256_set1_ps(sz));
  const __m256 qjv = _mm256_loadu_ps(xj + 3 * M);
  const __m256i tjv = _mm256_loadu_si256((const __m256i*)tj);
  const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  const __m256 rc2 = _mm256_set1_ps(kp.rc2), krf = _mm256_set1_ps(kp.krf), crf = _mm256_set1_ps(kp.crf);
  const __m256 two_krf = _mm256_set1_ps(2.0f * kp.krf);
  const __m256 c12f = _mm256_set1_ps(12.0f), c6f = _mm256_set1_ps(6.0f);
  __m256 fjx = zero, fjy = zero, fjz = zero;
  __m256d eacc0 = _mm256_setzero_pd(), eacc1 = _mm256_setzero_pd();  // total energy in float64
  __m256d lacc0 = _mm256_setzero_pd(), lacc1 = _mm256_setzero_pd();  // LJ energy in float64
  // Per-row force vectors, reduced to per-i-atom sums once per tile (hadd tree).
  alignas(32) float rows[3][M][M];
  for (int a = 0; a < M; ++a) {
    const uint32_t row = (uint32_t)(mask >> (a * M)) & 0xffu;
    if (!row) {
      _mm256_store_ps(rows[0][a], zero);
      _mm256_store_ps(rows[1][a], zero);
      _mm256_store_ps(rows[2][a], zero);
      continue;
    }
    const __m256 dx = _mm256_sub_ps(xjv, _mm256_set1_ps(xi[a]));
    const __m256 dy = _mm256_sub_ps(yjv, _mm256_set1_ps(xi[M + a]));
    const __m256 dz = _mm256_sub_ps(zjv, _mm256_set1_ps(xi[2 * M + a]));
    __m256 r2 = _mm256_fmadd_ps(dx, dx, _mm256_fmadd_ps(dy, dy, _mm256_mul_ps(dz, dz)));
    __m256 on = _mm256_castsi256_ps(
        _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)row), bits), bits));
    if (CUT) {
      on = _mm256_and_ps(on, _mm256_cmp_ps(r2, rc2, _CMP_LT_OQ));
      if (_mm256_testz_ps(on, on)) {  // whole row beyond the cutoff: common at list edges
        _mm256_store_ps(rows[0][a], zero);
        _mm256_store_ps(rows[1][a], zero);
        _mm256_store_ps(rows[2][a], zero);
        continue;
      }
    }
    r2 = _mm256_blendv_ps(one, r2, on);
    const __m256 inv_r = rsqrt_nr(r2);
    const __m256 inv_r2 = _mm256_mul_ps(inv_r, inv_r);
    const __m256 inv_r6 = _mm256_mul_ps(inv_r2, _mm256_mul_ps(inv_r2, inv_r2));
    const __m256 c6 = _mm256_i32gather_ps(c6t + ti[a] * stride, tjv, 4);
    const __m256 c12 = _mm256_i32gather_ps(c12t + ti[a] * stride, tjv, 4);
    const __m256 c6r6 = _mm256_mul_ps(c6, inv_r6);
    const __m256 c12r12 = _mm256_mul_ps(c12, _mm256_mul_ps(inv_r6, inv_r6));
    __m256 elj = _mm256_sub_ps(c12r12, c6r6);
    __m256 flj = _mm256_mul_ps(_mm256_fmsub_ps(c12f, c12r12, _mm256_mul_ps(c6f, c6r6)), inv_r2);
    if (SW) {
      const __m256 r = _mm256_mul_ps(r2, inv_r);
      const __m256 x = _mm256_min_ps(one, _mm256_max_ps(zero, _mm256_mul_ps(_mm256_sub_ps(r, _mm256_set1_ps(kp.rs)),
                                                                            _mm256_set1_ps(kp.inv_sw))));
      const __m256 x2 = _mm256_mul_ps(x, x);
      // s = 1 + x^3 (-10 + x (15 - 6 x)); ds = x^2 (-30 + x (60 - 30 x)) / (rc - rs)
      const __m256 s = _mm256_fmadd_ps(
          _mm256_mul_ps(x2, x),
          _mm256_fmadd_ps(x, _mm256_fnmadd_ps(_mm256_set1_ps(6.0f), x, _mm256_set1_ps(15.0f)),
                          _mm256_set1_ps(-10.0f)),
          one);
      const __m256 ds = _mm256_mul_ps(
          _mm256_mul_ps(x2, _mm256_fmadd_ps(x, _mm256_fnmadd_ps(_mm256_set1_ps(30.0f), x, _mm256_set1_ps(60.0f)),
                                            _mm256_set1_ps(-30.0f))),
          _mm256_set1_ps(kp.inv_sw));
      flj = _mm256_fmsub_ps(flj, s, _mm256_mul_ps(_mm256_mul_ps(elj, ds), inv_r));
      elj = _mm256_mul_ps(elj, s);
    }
    const __m256 qq = _mm256_mul_ps(_mm256_set1_ps(xi[3 * M + a] * kp.ke), qjv);
    const __m256 eel = _mm256_mul_ps(qq, _mm256_sub_ps(_mm256_fmadd_ps(krf, r2, inv_r), crf));
    const __m256 fel = _mm256_mul_ps(qq, _mm256_fmsub_ps(inv_r, inv_r2, two_krf));
    const __m256 e = _mm256_and_ps(on, _mm256_add_ps(elj, eel));
    const __m256 f = _mm256_and_ps(on, _mm256_add_ps(flj, fel));
    const __m256 el = _mm256_and_ps(on, elj);
    lacc0 = _mm256_add_pd(lacc0, _mm256_cvtps_pd(_mm256_castps256_ps128(el)));
    lacc1 = _mm256_add_pd(lacc1, _mm256_cvtps_pd(_mm256_extractf128_ps(el, 1)));
    eacc0 = _mm256_add_pd(eacc0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    eacc1 = _mm256_add_pd(eacc1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    const __m256 fx = _mm256_mul_ps(f, dx), fy = _mm256_mul_ps(f, dy), fz = _mm256_mul_ps(f, dz);
    fjx = _mm256_add_ps(fjx, fx);
    fjy = _mm256_add_ps(fjy, fy);
    fjz = _mm256_add_ps(fjz, fz);
    _mm256_store_ps(rows[0][a], fx);
    _mm256_store_ps(rows[1][a], fy);
    _mm256_store_ps(rows[2][a], fz);
  }
  for (int k = 0; k < 3; ++k) {
    // sums[a] = sum_b rows[k][a][b]
    __m256 h01 = _mm256_hadd_ps(_mm256_load_ps(rows[k][0]), _mm256_load_ps(rows[k][1]));
    __m256 h23 = _mm256_hadd_ps(_mm256_load_ps(rows[k][2]), _mm256_load_ps(rows[k][3]));
    __m256 h45 = _mm256_hadd_ps(_mm256_load_ps(rows[k][4]), _mm256_load_ps(rows[k][5]));
    __m256 h67 = _mm256_hadd_ps(_mm256_load_ps(rows[k][6]), _mm256_load_ps(rows[k][7]));
    __m256 h0123 = _mm256_hadd_ps(h01, h23);  // lanes: 0 1 2 3 | 0 1 2 3 (low | high halves)
    __m256 h4567 = _mm256_hadd_ps(h45, h67);
    __m256 lo = _mm256_permute2f128_ps(h0123, h4567, 0x20);
    __m256 hi = _mm256_permute2f128_ps(h0123, h4567, 0x31);
    __m256 sums = _mm256_add_ps(lo, hi);
    _mm256_storeu_ps(fi + k * M, _mm256_sub_ps(_mm256_loadu_ps(fi + k * M), sums));
  }
  _mm256_storeu_ps(fj, _mm256_add_ps(_mm256_loadu_ps(fj), fjx));
  _mm256_storeu_ps(fj + M, _mm256_add_ps(_mm256_loadu_ps(fj + M), fjy));
  _mm256_storeu_ps(fj + 2 * M, _mm256_add_ps(_mm256_loadu_ps(fj + 2 * M), fjz));
  alignas(32) double es[4], ls[4];
  _mm256_store_pd(es, _mm256_add_pd(eacc0, eacc1));
  _mm256_store_pd(ls, _mm256_add_pd(lacc0, lacc1));
  const double total = (es[0] + es[1]) + (es[2] + es[3]), lj = (ls[0] + ls[1]) + (ls[2] + ls[3]);
  e_lj += lj;
  e_el += total - lj;
}
#else
template <bool CUT, bool SW>
inline void tile(const float* __restrict xi, const float* __restrict xj, const int32_t* __restrict ti,
                 const int32_t* __restrict tj, const float* __restrict c6t, const float* __restrict c12t,
                 int stride, uint64_t mask, const float sx, const float sy, const float sz,
                 float* fi, float* fj, const KernelParams& kp, double& e_lj, double& e_el) {
  tile_generic<float, CUT, SW>(xi, xj, ti, tj, c6t, c12t, stride, mask, sx, sy, sz, fi, fj, kp, e_lj, e_el);
}
#endif

}  // namespace tmd
