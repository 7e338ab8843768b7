// What the CUDA build can see at run time. Compiled only where nvcc is found.
#pragma once

namespace apportion {

// Number of CUDA devices; 0 when no driver or device is present (any CUDA error counts as
// none, so the module imports on machines without a GPU).
int cuda_device_count();

}  // namespace apportion
