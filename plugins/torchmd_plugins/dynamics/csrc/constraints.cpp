// Native CPU kernels of the constraint solver: SETTLE (positions, velocities) and the
// CCMA iterations (positions, velocities). Each mirrors, operation for operation, the
// PyTorch code in settle.py / constraints.py, so results agree to rounding; see those
// files for the physics. No autograd: used only when no graph is needed.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

template <typename T>
struct V3 {
  T x, y, z;
};
template <typename T>
inline V3<T> sub(V3<T> a, V3<T> b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
template <typename T>
inline V3<T> add(V3<T> a, V3<T> b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
template <typename T>
inline V3<T> scl(T s, V3<T> a) { return {s * a.x, s * a.y, s * a.z}; }
template <typename T>
inline T dot(V3<T> a, V3<T> b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
template <typename T>
inline V3<T> cross(V3<T> a, V3<T> b) {
  return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}
template <typename T>
inline V3<T> unit(V3<T> v) {
  T n = std::sqrt(dot(v, v));
  return {v.x / n, v.y / n, v.z / n};
}
template <typename T>
inline V3<T> load(const T* p, int64_t i) { return {p[3 * i], p[3 * i + 1], p[3 * i + 2]}; }
template <typename T>
inline void store(T* p, int64_t i, V3<T> v) {
  p[3 * i] = v.x;
  p[3 * i + 1] = v.y;
  p[3 * i + 2] = v.z;
}

// minimum_image of torchmd_core.geometry: c, then b, then a (rows of the box).
template <typename T>
inline V3<T> mimage(V3<T> d, const T* box) {
  if (box == nullptr) return d;
  const T* a = box;
  const T* b = box + 3;
  const T* c = box + 6;
  T k = std::nearbyint(d.z / c[2]);
  d = {d.x - c[0] * k, d.y - c[1] * k, d.z - c[2] * k};
  k = std::nearbyint(d.y / b[1]);
  d = {d.x - b[0] * k, d.y - b[1] * k, d.z - b[2] * k};
  k = std::nearbyint(d.x / a[0]);
  d = {d.x - a[0] * k, d.y - a[1] * k, d.z - a[2] * k};
  return d;
}

template <typename T>
inline T clampv(T v, T lo, T hi) { return v < lo ? lo : (v > hi ? hi : v); }

template <typename T>
void settle_pos_impl(const torch::Tensor& pos, const torch::Tensor& ref,
                     const torch::Tensor& waters, const torch::Tensor& box,
                     torch::Tensor& out, double m_o_, double m_h_, double ra_,
                     double rb_, double rc_, double d_oh_, double d_hh_, double tol_) {
  const int64_t R = pos.size(0), N = pos.size(1), W = waters.size(0);
  const T* P = pos.data_ptr<T>();
  const T* Q = ref.data_ptr<T>();
  const int64_t* wat = waters.data_ptr<int64_t>();
  const T* B = box.defined() ? box.data_ptr<T>() : nullptr;
  T* O = out.data_ptr<T>();
  const T m_o = m_o_, m_h = m_h_, ra = ra_, rb = rb_, rc = rc_;
  const T total = T(m_o_ + 2.0 * m_h_);
  const T d_oh2 = T(d_oh_ * d_oh_), d_hh2 = T(d_hh_ * d_hh_);
  const T lim_oh = T(2.0 * tol_ * d_oh_ * d_oh_), lim_hh = T(2.0 * tol_ * d_hh_ * d_hh_);
  for (int64_t rep = 0; rep < R; ++rep) {
    const T* p = P + rep * N * 3;
    const T* q = Q + rep * N * 3;
    const T* bx = B ? B + rep * 9 : nullptr;
    T* o_ = O + rep * N * 3;
    at::parallel_for(0, W, 256, [&](int64_t w0, int64_t w1) {
      for (int64_t w = w0; w < w1; ++w) {
        int64_t io = wat[3 * w], i1 = wat[3 * w + 1], i2 = wat[3 * w + 2];
        V3<T> qo = load(q, io);
        V3<T> b0 = mimage(sub(load(q, i1), qo), bx);
        V3<T> c0 = mimage(sub(load(q, i2), qo), bx);
        V3<T> pa = sub(load(p, io), qo);
        V3<T> pb = sub(load(p, i1), load(q, i1));
        V3<T> pc = sub(load(p, i2), load(q, i2));
        V3<T> bp = add(b0, pb), cp = add(c0, pc);
        V3<T> num = add(add(scl(m_o, pa), scl(m_h, bp)), scl(m_h, cp));
        V3<T> com = {num.x / total, num.y / total, num.z / total};
        V3<T> a1 = sub(pa, com), b1 = sub(bp, com), c1 = sub(cp, com);
        bool ok = std::abs(dot(sub(b1, a1), sub(b1, a1)) - d_oh2) <= lim_oh &&
                  std::abs(dot(sub(c1, a1), sub(c1, a1)) - d_oh2) <= lim_oh &&
                  std::abs(dot(sub(c1, b1), sub(c1, b1)) - d_hh2) <= lim_hh;
        if (ok) continue;  // out already holds zeros
        V3<T> ez = unit(cross(b0, c0));
        V3<T> ex = unit(cross(a1, ez));
        V3<T> ey = cross(ez, ex);
        T xb0 = dot(b0, ex), yb0 = dot(b0, ey);
        T xc0 = dot(c0, ex), yc0 = dot(c0, ey);
        T za1 = dot(a1, ez);
        T xb1 = dot(b1, ex), yb1 = dot(b1, ey), zb1 = dot(b1, ez);
        T xc1 = dot(c1, ex), yc1 = dot(c1, ey), zc1 = dot(c1, ez);
        T sin_phi = clampv(za1 / ra, T(-1), T(1));
        T cos_phi = std::sqrt(std::max(T(1) - sin_phi * sin_phi, T(0)));
        T sin_psi = clampv((zb1 - zc1) / (T(2) * rc * cos_phi), T(-1), T(1));
        T cos_psi = std::sqrt(std::max(T(1) - sin_psi * sin_psi, T(0)));
        T ya2 = ra * cos_phi;
        T xb2 = -rc * cos_psi;
        T t1 = -rb * cos_phi, t2 = rc * sin_psi * sin_phi;
        T yb2 = t1 - t2, yc2 = t1 + t2;
        T alpha = xb2 * (xb0 - xc0) + yb0 * yb2 + yc0 * yc2;
        T beta = xb2 * (yc0 - yb0) + xb0 * yb2 + xc0 * yc2;
        T gamma = xb0 * yb1 - xb1 * yb0 + xc0 * yc1 - xc1 * yc0;
        T ab2 = alpha * alpha + beta * beta;
        T sin_t = (alpha * gamma - beta * std::sqrt(std::max(ab2 - gamma * gamma, T(0)))) / ab2;
        T cos_t = std::sqrt(std::max(T(1) - sin_t * sin_t, T(0)));
        auto lab = [&](T x, T y, T z) {
          return add(add(scl(x, ex), scl(y, ey)), scl(z, ez));
        };
        V3<T> a3 = lab(-ya2 * sin_t, ya2 * cos_t, za1);
        V3<T> b3 = lab(xb2 * cos_t - yb2 * sin_t, xb2 * sin_t + yb2 * cos_t, zb1);
        V3<T> c3 = lab(-xb2 * cos_t - yc2 * sin_t, -xb2 * sin_t + yc2 * cos_t, zc1);
        store(o_, io, sub(a3, a1));
        store(o_, i1, sub(b3, b1));
        store(o_, i2, sub(c3, c1));
      }
    });
  }
}

template <typename T>
void settle_vel_impl(const torch::Tensor& vel, const torch::Tensor& pos,
                     const torch::Tensor& waters, const torch::Tensor& box,
                     torch::Tensor& out, double m_o_, double m_h_, double tol_) {
  const int64_t R = pos.size(0), N = pos.size(1), W = waters.size(0);
  const T* Vp = vel.data_ptr<T>();
  const T* P = pos.data_ptr<T>();
  const int64_t* wat = waters.data_ptr<int64_t>();
  const T* B = box.defined() ? box.data_ptr<T>() : nullptr;
  T* O = out.data_ptr<T>();
  const T io = T(1.0 / m_o_), ih = T(1.0 / m_h_), tol = T(tol_);
  const T ioh = T(1.0 / m_o_ + 1.0 / m_h_), ih2 = T(2.0 / m_h_);
  for (int64_t rep = 0; rep < R; ++rep) {
    const T* p = P + rep * N * 3;
    const T* v = Vp + rep * N * 3;
    const T* bx = B ? B + rep * 9 : nullptr;
    T* o_ = O + rep * N * 3;
    at::parallel_for(0, W, 256, [&](int64_t w0, int64_t w1) {
      for (int64_t w = w0; w < w1; ++w) {
        int64_t a = wat[3 * w], b = wat[3 * w + 1], c = wat[3 * w + 2];
        V3<T> pa = load(p, a), pb = load(p, b), pc = load(p, c);
        V3<T> r1 = mimage(sub(pa, pb), bx);
        V3<T> r2 = mimage(sub(pa, pc), bx);
        V3<T> r3 = mimage(sub(pb, pc), bx);
        T n1 = dot(r1, r1), n2 = dot(r2, r2), n3 = dot(r3, r3);
        V3<T> vo = load(v, a), vh1 = load(v, b), vh2 = load(v, c);
        V3<T> u1 = sub(vo, vh1), u2 = sub(vo, vh2), u3 = sub(vh1, vh2);
        T b1 = -dot(r1, u1), b2 = -dot(r2, u2), b3 = -dot(r3, u3);
        bool ok = std::abs(b1) <= tol * std::sqrt(n1 * dot(u1, u1)) &&
                  std::abs(b2) <= tol * std::sqrt(n2 * dot(u2, u2)) &&
                  std::abs(b3) <= tol * std::sqrt(n3 * dot(u3, u3));
        if (ok) continue;
        T k11 = ioh * n1, k22 = ioh * n2, k33 = ih2 * n3;
        T k12 = io * dot(r1, r2), k13 = -ih * dot(r1, r3), k23 = ih * dot(r2, r3);
        T c11 = k22 * k33 - k23 * k23;
        T c12 = k13 * k23 - k12 * k33;
        T c13 = k12 * k23 - k13 * k22;
        T c22 = k11 * k33 - k13 * k13;
        T c23 = k12 * k13 - k11 * k23;
        T c33 = k11 * k22 - k12 * k12;
        T det = k11 * c11 + k12 * c12 + k13 * c13;
        T m1 = (c11 * b1 + c12 * b2 + c13 * b3) / det;
        T m2 = (c12 * b1 + c22 * b2 + c23 * b3) / det;
        T m3 = (c13 * b1 + c23 * b2 + c33 * b3) / det;
        V3<T> g1 = scl(m1, r1), g2 = scl(m2, r2), g3 = scl(m3, r3);
        store(o_, a, scl(io, add(g1, g2)));
        store(o_, b, scl(ih, sub(g3, g1)));
        store(o_, c, scl(-ih, add(g2, g3)));
      }
    });
  }
}

// CCMA: `positions` mode iterates distances along the reference directions s;
// `velocities` mode removes relative velocities along r. Per replica, stop when every
// constraint is within tolerance (checked before each update), as the torch loop does.
template <typename T>
void ccma_impl(bool positions_mode, const torch::Tensor& x, const torch::Tensor& ref,
               const torch::Tensor& pairs, const torch::Tensor& dist,
               const torch::Tensor& inv_mass, const torch::Tensor& rowptr,
               const torch::Tensor& cols, const torch::Tensor& vals,
               const torch::Tensor& box, torch::Tensor& corr, torch::Tensor& done,
               double tol_, int64_t max_iter) {
  const int64_t R = x.size(0), N = x.size(1), C = pairs.size(0);
  const T* X = x.data_ptr<T>();
  const T* Q = ref.data_ptr<T>();
  const int64_t* pr = pairs.data_ptr<int64_t>();
  const T* D = dist.data_ptr<T>();
  const T* IM = inv_mass.data_ptr<T>();
  const int64_t* rp = rowptr.data_ptr<int64_t>();
  const int64_t* cl = cols.data_ptr<int64_t>();
  const T* vl = vals.data_ptr<T>();
  const T* B = box.defined() ? box.data_ptr<T>() : nullptr;
  T* CO = corr.data_ptr<T>();
  bool* DN = done.data_ptr<bool>();
  const T tol = T(tol_);
  const T tiny = std::sqrt(std::numeric_limits<T>::min());
  std::vector<V3<T>> s(C), xab(C);
  std::vector<T> d2(C), w(C), limit(C), sq(C), delta(C);
  for (int64_t c = 0; c < C; ++c) {
    d2[c] = D[c] * D[c];
    w[c] = IM[pr[2 * c]] + IM[pr[2 * c + 1]];
    limit[c] = T(2.0 * tol_) * d2[c];
  }
  for (int64_t rep = 0; rep < R; ++rep) {
    const T* xr = X + rep * N * 3;
    const T* qr = Q + rep * N * 3;
    const T* bx = B ? B + rep * 9 : nullptr;
    T* co = CO + rep * N * 3;
    for (int64_t c = 0; c < C; ++c) {
      int64_t a = pr[2 * c], b = pr[2 * c + 1];
      if (positions_mode) {
        s[c] = mimage(sub(load(qr, a), load(qr, b)), bx);
        xab[c] = sub(load(xr, a), load(xr, b));
      } else {  // x holds velocities, ref positions
        s[c] = mimage(sub(load(qr, a), load(qr, b)), bx);
        sq[c] = dot(s[c], s[c]);
        xab[c] = sub(load(xr, a), load(xr, b));
      }
    }
    bool ok = false;
    for (int64_t it = 0; it < max_iter; ++it) {
      ok = true;
      for (int64_t c = 0; c < C; ++c) {
        int64_t a = pr[2 * c], b = pr[2 * c + 1];
        V3<T> u = sub(add(xab[c], load(co, a)), load(co, b));
        if (positions_mode) {
          V3<T> r = mimage(u, bx);
          T diff = d2[c] - dot(r, r);
          if (!(std::abs(diff) <= limit[c])) ok = false;
          T rs = dot(r, s[c]);
          if (rs < T(0.1) * d2[c]) rs = T(0.1) * d2[c];
          delta[c] = diff / (T(2) * w[c] * rs);
        } else {
          T rv = dot(s[c], u);
          if (!(std::abs(rv) <= tol * std::sqrt(sq[c] * dot(u, u)) + tiny)) ok = false;
          delta[c] = -rv / (w[c] * sq[c]);
        }
      }
      if (ok) break;
      for (int64_t c = 0; c < C; ++c) {
        T lam = 0;
        for (int64_t k = rp[c]; k < rp[c + 1]; ++k) lam += delta[cl[k]] * vl[k];
        int64_t a = pr[2 * c], b = pr[2 * c + 1];
        V3<T> g = scl(lam, s[c]);
        store(co, a, add(load(co, a), scl(IM[a], g)));
        store(co, b, sub(load(co, b), scl(IM[b], g)));
      }
    }
    DN[rep] = ok;
  }
}

torch::Tensor settle_positions(torch::Tensor pos, torch::Tensor ref, torch::Tensor waters,
                               c10::optional<torch::Tensor> box, double m_o, double m_h,
                               double ra, double rb, double rc, double d_oh, double d_hh,
                               double tol) {
  auto out = torch::zeros(pos.sizes(), pos.options());  // contiguous
  torch::Tensor bx = box.has_value() ? box->contiguous() : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "settle_positions", [&] {
    settle_pos_impl<scalar_t>(pos.contiguous(), ref.contiguous(), waters.contiguous(), bx,
                              out, m_o, m_h, ra, rb, rc, d_oh, d_hh, tol);
  });
  return out;
}

torch::Tensor settle_velocities(torch::Tensor vel, torch::Tensor pos, torch::Tensor waters,
                                c10::optional<torch::Tensor> box, double m_o, double m_h,
                                double tol) {
  auto out = torch::zeros(vel.sizes(), vel.options());  // contiguous
  torch::Tensor bx = box.has_value() ? box->contiguous() : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(vel.scalar_type(), "settle_velocities", [&] {
    settle_vel_impl<scalar_t>(vel.contiguous(), pos.contiguous(), waters.contiguous(), bx,
                              out, m_o, m_h, tol);
  });
  return out;
}

std::vector<torch::Tensor> ccma(bool positions_mode, torch::Tensor x, torch::Tensor ref,
                                torch::Tensor pairs, torch::Tensor dist,
                                torch::Tensor inv_mass, torch::Tensor rowptr,
                                torch::Tensor cols, torch::Tensor vals,
                                c10::optional<torch::Tensor> box, double tol,
                                int64_t max_iter) {
  auto corr = torch::zeros(x.sizes(), x.options());  // contiguous
  auto done = torch::zeros({x.size(0)}, x.options().dtype(torch::kBool));
  torch::Tensor bx = box.has_value() ? box->contiguous() : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ccma", [&] {
    ccma_impl<scalar_t>(positions_mode, x.contiguous(), ref.contiguous(),
                        pairs.contiguous(), dist.contiguous(), inv_mass.contiguous(),
                        rowptr.contiguous(), cols.contiguous(), vals.contiguous(), bx,
                        corr, done, tol, max_iter);
  });
  return {corr, done};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("settle_positions", &settle_positions);
  m.def("settle_velocities", &settle_velocities);
  m.def("ccma", &ccma);
}
