#pragma once
#include <ATen/ATen.h>

namespace lofi {

void check_inputs(const at::Tensor& frames, const at::Tensor& index, const at::Tensor& boxes,
                  int64_t out_h, int64_t out_w, at::ArrayRef<double> mean, at::ArrayRef<double> std,
                  at::ScalarType dtype);

}  // namespace lofi
