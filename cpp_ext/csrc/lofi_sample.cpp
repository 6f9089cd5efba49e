// LoFi sampling: uint8 frames (T, H, W, 3) -> normalised encoder input (B, L, k, 3, h, w) in one
// pass: temporal gather by index, per-clip crop box, bilinear resize with half-pixel centres
// (edges clamped), (x / 255 - mean) / std, cast. Arithmetic mirrors the torch reference:
// vertical lerp, then horizontal lerp, each as a + (b - a) * w in float32.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "lofi_sample.h"

namespace lofi {

void check_inputs(const at::Tensor& frames, const at::Tensor& index, const at::Tensor& boxes,
                  int64_t out_h, int64_t out_w, at::ArrayRef<double> mean, at::ArrayRef<double> std,
                  at::ScalarType dtype) {
  // lofi_sample checks all of this (and the values) in Python first; these guard direct calls of
  // torch.ops.lofi.sample, so no input can make a kernel read outside its buffers.
  TORCH_CHECK(frames.dim() == 4 && frames.size(3) == 3 && frames.scalar_type() == at::kByte,
              "lofi::sample: frames must be (T, H, W, 3) uint8");
  TORCH_CHECK(frames.size(0) > 0 && frames.size(1) > 0 && frames.size(2) > 0, "lofi::sample: frames are empty");
  TORCH_CHECK(index.dim() == 3 && index.scalar_type() == at::kLong, "lofi::sample: index must be (B, L, k) int64");
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(0) == index.size(0) && boxes.size(1) == 4 &&
                  boxes.scalar_type() == at::kFloat,
              "lofi::sample: boxes must be (B, 4) float32");
  TORCH_CHECK(index.device() == frames.device() && boxes.device() == frames.device(),
              "lofi::sample: index and boxes must be on the frames' device");
  TORCH_CHECK(out_h > 0 && out_w > 0, "lofi::sample: output size must be positive");
  TORCH_CHECK(mean.size() == 3 && std.size() == 3, "lofi::sample: mean and std need 3 values");
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "lofi::sample: dtype must be float32, float16 or bfloat16");
  // the CUDA kernel holds these in 32-bit ints; the same limits everywhere keep CPU and CUDA alike
  constexpr int64_t int_max = std::numeric_limits<int32_t>::max();
  const auto fits = [&](int64_t a, int64_t b) { return a <= int_max && b <= int_max && a * b <= int_max; };
  TORCH_CHECK(frames.size(1) <= int_max && fits(3, frames.size(2)) && fits(out_h, out_w) &&
                  fits(index.size(1), index.size(2)),
              "lofi::sample: a frame, an output frame or a clip exceeds the kernel's 2^31 - 1 limit");
}

// Source coordinate tables of one axis for one clip, in the reference's float32 arithmetic. fmin/fmax
// clamp a NaN coordinate to 0, as fminf/fmaxf do on the GPU, so a NaN box never indexes memory.
void axis_table(float lo, float hi, int64_t out, int64_t in, int64_t* i0, int64_t* i1, float* w) {
  const float step = (hi - lo) / static_cast<float>(out);
  for (int64_t o = 0; o < out; ++o) {
    float s = lo + (static_cast<float>(o) + 0.5f) * step - 0.5f;
    s = std::fmin(std::fmax(s, 0.0f), static_cast<float>(in - 1));
    const int64_t a = static_cast<int64_t>(std::floor(s));
    i0[o] = a;
    i1[o] = std::min(a + 1, in - 1);
    w[o] = s - static_cast<float>(a);
  }
}

template <typename scalar_t>
void sample_cpu_kernel(const uint8_t* frames, const int64_t* index, const float* boxes, scalar_t* out,
                       int64_t n_frames, int64_t H, int64_t W, int64_t B, int64_t N, int64_t oh, int64_t ow,
                       const float* scale, const float* shift) {
  // per-clip tables: y0, y1, wy (oh) and x0, x1, wx (ow)
  std::vector<int64_t> yi(B * oh * 2), xi(B * ow * 2);
  std::vector<float> wy(B * oh), wx(B * ow);
  for (int64_t b = 0; b < B; ++b) {
    const float* box = boxes + 4 * b;
    axis_table(box[1], box[3], oh, H, &yi[b * oh * 2], &yi[b * oh * 2 + oh], &wy[b * oh]);
    axis_table(box[0], box[2], ow, W, &xi[b * ow * 2], &xi[b * ow * 2 + ow], &wx[b * ow]);
  }
  const int64_t rows = B * N * oh;
  const int64_t plane = oh * ow;
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> vert(W * 3);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t y = r % oh;
      const int64_t bn = r / oh;
      const int64_t b = bn / N;
      const int64_t f = index[bn];
      TORCH_CHECK(f >= 0 && f < n_frames, "lofi::sample: frame index ", f, " out of range [0, ", n_frames, ")");
      const uint8_t* top = frames + (f * H + yi[b * oh * 2 + y]) * W * 3;
      const uint8_t* bot = frames + (f * H + yi[b * oh * 2 + oh + y]) * W * 3;
      const float wyy = wy[b * oh + y];
      for (int64_t i = 0; i < W * 3; ++i) {  // vectorisable: contiguous uint8 -> float lerp
        const float a = static_cast<float>(top[i]);
        vert[i] = a + (static_cast<float>(bot[i]) - a) * wyy;
      }
      const int64_t* x0 = &xi[b * ow * 2];
      const int64_t* x1 = x0 + ow;
      const float* wxx = &wx[b * ow];
      scalar_t* o = out + bn * 3 * plane + y * ow;
      for (int64_t c = 0; c < 3; ++c) {
        scalar_t* oc = o + c * plane;
        const float sc = scale[c], sh = shift[c];
        for (int64_t x = 0; x < ow; ++x) {
          const float a = vert[x0[x] * 3 + c];
          const float v = a + (vert[x1[x] * 3 + c] - a) * wxx[x];
          oc[x] = static_cast<scalar_t>(v * sc - sh);
        }
      }
    }
  });
}

at::Tensor sample_cpu(const at::Tensor& frames_in, const at::Tensor& index_in, const at::Tensor& boxes_in,
                      int64_t out_h, int64_t out_w, at::ArrayRef<double> mean, at::ArrayRef<double> std,
                      at::ScalarType dtype) {
  check_inputs(frames_in, index_in, boxes_in, out_h, out_w, mean, std, dtype);
  const at::Tensor frames = frames_in.contiguous();
  const at::Tensor index = index_in.contiguous();
  const at::Tensor boxes = boxes_in.contiguous();
  const int64_t B = index.size(0), L = index.size(1), K = index.size(2);
  at::Tensor out = at::empty({B, L, K, 3, out_h, out_w}, frames.options().dtype(dtype));
  float scale[3], shift[3];
  for (int c = 0; c < 3; ++c) {
    scale[c] = static_cast<float>(1.0 / (255.0 * std[c]));
    shift[c] = static_cast<float>(mean[c] / std[c]);
  }
  const auto run = [&](auto zero) {
    using scalar_t = decltype(zero);
    sample_cpu_kernel<scalar_t>(frames.data_ptr<uint8_t>(), index.data_ptr<int64_t>(), boxes.data_ptr<float>(),
                                out.data_ptr<scalar_t>(), frames.size(0), frames.size(1), frames.size(2), B, L * K,
                                out_h, out_w, scale, shift);
  };
  switch (dtype) {  // check_inputs admits these three only
    case at::kFloat: run(float{}); break;
    case at::kHalf: run(at::Half{}); break;
    default: run(at::BFloat16{});
  }
  return out;
}

TORCH_LIBRARY(lofi, m) {
  m.def(
      "sample(Tensor frames, Tensor index, Tensor boxes, int out_h, int out_w, float[] mean, float[] std, "
      "ScalarType dtype) -> Tensor");
}

TORCH_LIBRARY_IMPL(lofi, CPU, m) { m.impl("sample", &sample_cpu); }

}  // namespace lofi
