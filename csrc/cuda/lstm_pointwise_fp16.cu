// The float16 instantiation of the CUDA pointwise passes. One dtype per file: the four compile in parallel.
#include "lstm_pointwise_cuda.cuh"

namespace fused_lstm {
namespace cuda {

template void launch_forward_pointwise<c10::Half>(const LstmForwardPointwiseParams& params);
template void launch_backward_pointwise<c10::Half>(const LstmBackwardPointwiseParams& params);

}  // namespace cuda
}  // namespace fused_lstm
