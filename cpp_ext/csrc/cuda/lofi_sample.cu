// CUDA LoFi sampling: one launch per call on the current stream. Each thread writes two adjacent
// output pixels of one row for all three channels (paired stores along x, coalesced across the
// warp); reads are 2x2 uint8 RGB neighbourhoods that stay in L1/L2 across neighbouring threads.
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

template <typename scalar_t>
__device__ __forceinline__ float texel(const uint8_t* __restrict__ top, const uint8_t* __restrict__ bot, int x0,
                                       int x1, float wy, float wx, int c) {
  const float a0 = top[x0 * 3 + c], b0 = bot[x0 * 3 + c];
  const float a1 = top[x1 * 3 + c], b1 = bot[x1 * 3 + c];
  const float l = a0 + (b0 - a0) * wy;
  const float r = a1 + (b1 - a1) * wy;
  return l + (r - l) * wx;
}

template <typename scalar_t>
__global__ void sample_kernel(const uint8_t* __restrict__ frames, const int64_t* __restrict__ index,
                              const float* __restrict__ boxes, scalar_t* __restrict__ out, int64_t n_frames, int H,
                              int W, int N, int oh, int ow, Norm norm) {
  const int xp = (blockIdx.x * blockDim.x + threadIdx.x) * 2;  // first of two output columns
  const int y = blockIdx.y;
  const int64_t bn = blockIdx.z;  // clip * N + frame-in-clip
  if (xp >= ow) return;
  const int b = static_cast<int>(bn / N);
  const float* box = boxes + 4 * b;
  const int64_t f = index[bn];
  CUDA_KERNEL_ASSERT(f >= 0 && f < n_frames);
  int y0, y1;
  float wy;
  coord(box[1], box[3], y, oh, H, y0, y1, wy);
  const uint8_t* top = frames + (f * H + y0) * static_cast<int64_t>(W) * 3;
  const uint8_t* bot = frames + (f * H + y1) * static_cast<int64_t>(W) * 3;
  const int64_t plane = static_cast<int64_t>(oh) * ow;
  scalar_t* o = out + bn * 3 * plane + static_cast<int64_t>(y) * ow + xp;
  const bool pair = xp + 1 < ow;
  int xa0, xa1, xb0 = 0, xb1 = 0;
  float wxa, wxb = 0.f;
  coord(box[0], box[2], xp, ow, W, xa0, xa1, wxa);
  if (pair) coord(box[0], box[2], xp + 1, ow, W, xb0, xb1, wxb);
#pragma unroll
  for (int c = 0; c < 3; ++c) {
    scalar_t* oc = o + c * plane;
    oc[0] = static_cast<scalar_t>(texel<scalar_t>(top, bot, xa0, xa1, wy, wxa, c) * norm.scale[c] - norm.shift[c]);
    if (pair)
      oc[1] = static_cast<scalar_t>(texel<scalar_t>(top, bot, xb0, xb1, wy, wxb, c) * norm.scale[c] - norm.shift[c]);
  }
}

at::Tensor sample_cuda(const at::Tensor& frames_in, const at::Tensor& index_in, const at::Tensor& boxes_in,
                       int64_t out_h, int64_t out_w, at::ArrayRef<double> mean, at::ArrayRef<double> std,
                       at::ScalarType dtype) {
  check_inputs(frames_in, index_in, boxes_in, out_h, out_w, mean, std);
  TORCH_CHECK(index_in.is_cuda() && boxes_in.is_cuda(), "lofi::sample: index and boxes must be on the frames' device");
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
  const int threads = 128;
  const int64_t pairs = (out_w + 1) / 2;
  const int64_t frames_out = B * L * K;
  TORCH_CHECK(frames_out <= 65535 && out_h <= 65535, "lofi::sample: grid too large; split the call");
  const dim3 grid((pairs + threads - 1) / threads, out_h, frames_out);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "lofi_sample_cuda", [&] {
    sample_kernel<scalar_t><<<grid, threads, 0, stream>>>(
        frames.data_ptr<uint8_t>(), index.data_ptr<int64_t>(), boxes.data_ptr<float>(), out.data_ptr<scalar_t>(),
        frames.size(0), frames.size(1), frames.size(2), L * K, out_h, out_w, norm);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(lofi, CUDA, m) { m.impl("sample", &sample_cuda); }

}  // namespace lofi
