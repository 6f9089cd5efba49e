// CUDA LoFi sampling: one launch per call on the current stream. A thread computes V adjacent
// output pixels of one row for all three channels and writes each channel's V values with one
// aligned vector store (16 bytes where the width allows); consecutive threads take consecutive
// column groups, so a warp's stores are contiguous. Reads are 2x2 uint8 RGB neighbourhoods that
// neighbouring threads share through L1/L2. Sizes that must fit the int parameters are checked by
// check_inputs; an out-of-range frame index (possible only in direct calls inside CUDA graph capture,
// where lofi_sample cannot read the index) writes NaN instead of reading: no device-side assert.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <torch/torch.h>

#include "../lofi_sample.h"

namespace lofi {
namespace {

struct Norm {
  float scale[3];
  float shift[3];
};

__device__ __forceinline__ void coord(float lo, float hi, int o, int out, int in, int& i0, int& i1, float& w) {
  const float step = (hi - lo) / static_cast<float>(out);
  float s = lo + (static_cast<float>(o) + 0.5f) * step - 0.5f;
  s = fminf(fmaxf(s, 0.0f), static_cast<float>(in - 1));
  i0 = static_cast<int>(floorf(s));
  i1 = min(i0 + 1, in - 1);
  w = s - static_cast<float>(i0);
}

__device__ __forceinline__ float texel(const uint8_t* __restrict__ top, const uint8_t* __restrict__ bot, int x0,
                                       int x1, float wy, float wx, int c) {
  const float a0 = top[x0 * 3 + c], b0 = bot[x0 * 3 + c];
  const float a1 = top[x1 * 3 + c], b1 = bot[x1 * 3 + c];
  const float l = a0 + (b0 - a0) * wy;
  const float r = a1 + (b1 - a1) * wy;
  return l + (r - l) * wx;
}

// V values written as one vector store: the struct's alignment makes nvcc emit st.global.v2/v4.
template <typename scalar_t, int V>
struct alignas(sizeof(scalar_t) * V) Pack {
  scalar_t v[V];
};

template <typename scalar_t, int V>
__global__ void sample_kernel(const uint8_t* __restrict__ frames, const int64_t* __restrict__ index,
                              const float* __restrict__ boxes, scalar_t* __restrict__ out, int64_t n_frames, int H,
                              int W, int N, int64_t frames_out, int oh, int ow, Norm norm) {
  const int groups = ow / V;  // the launcher picks V dividing ow
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // the last block overhangs
  if (p >= static_cast<int64_t>(oh) * groups) return;
  const int y = static_cast<int>(p / groups);
  const int x = static_cast<int>(p - static_cast<int64_t>(y) * groups) * V;
  const int64_t plane = static_cast<int64_t>(oh) * ow;
  for (int64_t bn = blockIdx.y; bn < frames_out; bn += gridDim.y) {  // clip * N + frame-in-clip
    const float* box = boxes + 4 * (bn / N);
    const int64_t f = index[bn];
    scalar_t* o = out + bn * 3 * plane + static_cast<int64_t>(y) * ow + x;
    if (f < 0 || f >= n_frames) {
      Pack<scalar_t, V> nan;
#pragma unroll
      for (int i = 0; i < V; ++i) nan.v[i] = static_cast<scalar_t>(__int_as_float(0x7fc00000));
#pragma unroll
      for (int c = 0; c < 3; ++c) *reinterpret_cast<Pack<scalar_t, V>*>(o + c * plane) = nan;
      continue;
    }
    int y0, y1;
    float wy;
    coord(box[1], box[3], y, oh, H, y0, y1, wy);
    const uint8_t* top = frames + (f * H + y0) * static_cast<int64_t>(W) * 3;
    const uint8_t* bot = frames + (f * H + y1) * static_cast<int64_t>(W) * 3;
    int x0[V], x1[V];
    float wx[V];
#pragma unroll
    for (int i = 0; i < V; ++i) coord(box[0], box[2], x + i, ow, W, x0[i], x1[i], wx[i]);
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      Pack<scalar_t, V> pack;
#pragma unroll
      for (int i = 0; i < V; ++i)
        pack.v[i] = static_cast<scalar_t>(texel(top, bot, x0[i], x1[i], wy, wx[i], c) * norm.scale[c] - norm.shift[c]);
      *reinterpret_cast<Pack<scalar_t, V>*>(o + c * plane) = pack;
    }
  }
}

template <typename scalar_t, int V>
void launch(const at::Tensor& frames, const at::Tensor& index, const at::Tensor& boxes, at::Tensor& out,
            const Norm& norm) {
  const int64_t B = index.size(0), N = index.size(1) * index.size(2);
  const int64_t frames_out = B * N, oh = out.size(4), ow = out.size(5);
  const int threads = 256;
  const int64_t work = oh * (ow / V);  // < 2^31: check_inputs bounds oh * ow
  const dim3 grid(static_cast<unsigned>((work + threads - 1) / threads),
                  static_cast<unsigned>(std::min<int64_t>(frames_out, 65535)));
  sample_kernel<scalar_t, V><<<grid, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
      frames.data_ptr<uint8_t>(), index.data_ptr<int64_t>(), boxes.data_ptr<float>(), out.data_ptr<scalar_t>(),
      frames.size(0), frames.size(1), frames.size(2), N, frames_out, oh, ow, norm);
}

// Widest vector (at most 16 bytes) whose width divides the row, so every row starts aligned; only
// the widths a type can take are instantiated (8 lanes for 2-byte types only).
template <typename scalar_t>
void launch_widest(const at::Tensor& frames, const at::Tensor& index, const at::Tensor& boxes, at::Tensor& out,
                   const Norm& norm) {
  const int64_t ow = out.size(5);
  if constexpr (sizeof(scalar_t) == 2) {
    if (ow % 8 == 0) return launch<scalar_t, 8>(frames, index, boxes, out, norm);
  }
  if (ow % 4 == 0) return launch<scalar_t, 4>(frames, index, boxes, out, norm);
  if (ow % 2 == 0) return launch<scalar_t, 2>(frames, index, boxes, out, norm);
  launch<scalar_t, 1>(frames, index, boxes, out, norm);
}

at::Tensor sample_cuda(const at::Tensor& frames_in, const at::Tensor& index_in, const at::Tensor& boxes_in,
                       int64_t out_h, int64_t out_w, at::ArrayRef<double> mean, at::ArrayRef<double> std,
                       at::ScalarType dtype) {
  check_inputs(frames_in, index_in, boxes_in, out_h, out_w, mean, std, dtype);
  const c10::cuda::CUDAGuard guard(frames_in.device());
  const at::Tensor frames = frames_in.contiguous();
  const at::Tensor index = index_in.contiguous();
  const at::Tensor boxes = boxes_in.contiguous();
  const int64_t B = index.size(0), L = index.size(1), K = index.size(2);
  at::Tensor out = at::empty({B, L, K, 3, out_h, out_w}, frames.options().dtype(dtype));
  if (out.numel() == 0) return out;
  Norm norm;
  for (int c = 0; c < 3; ++c) {
    norm.scale[c] = static_cast<float>(1.0 / (255.0 * std[c]));
    norm.shift[c] = static_cast<float>(mean[c] / std[c]);
  }
  switch (dtype) {  // check_inputs admits these three only
    case at::kFloat: launch_widest<float>(frames, index, boxes, out, norm); break;
    case at::kHalf: launch_widest<at::Half>(frames, index, boxes, out, norm); break;
    default: launch_widest<at::BFloat16>(frames, index, boxes, out, norm);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(lofi, CUDA, m) { m.impl("sample", &sample_cuda); }

}  // namespace lofi
