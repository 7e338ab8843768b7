// The normal and the tangent projection of the budget manifold (docs/architecture.md,
// "Riemannian relaxation"), for the geometry of a RetractionView (its logits are only read).
//
// With p_i = softmax(z_i / tau) and costs w_ik = s_i c_ik, the normal is the gradient of
// E(z) = sum_ik p_ik w_ik:  n_ik = p_ik (w_ik - wbar_i) / tau,  wbar_i = sum_k p_ik w_ik.
// The projection of g onto the tangent space of an instance is g - (<g,n>/<n,n>) n (g itself
// where n = 0). Everything is computed in double, with one vectorised exp per logit, and
// rounded once to the output type.
#pragma once

#include <cstdint>

#include "retraction.hpp"

namespace apportion {

// normal (B,N,K), row-major, of the type of the logits. `threads`: as in run_batch.
template <class T>
void budget_normal_batch(const RetractionView<T>& p, T* normal, int threads);

// out = grad - (<grad,n>/<n,n>) n per instance; grad and out (B,N,K) row-major (out may
// alias grad).
template <class T, class G>
void project_tangent_batch(const RetractionView<T>& p, const G* grad, G* out, int threads);

}  // namespace apportion
