// 2-D convolutions on the CPU through oneDNN (the library PyTorch's CPU convolutions use), exposed
// to XLA as three typed FFI handlers: forward, input gradient ("backward data") and kernel
// gradient ("backward weights"). Built and registered by visionax/layers/conv/onednn_build.py.
//
// Layouts are XLA's row-major buffers as visionax's convolution passes them:
//   x, dx: [batch, height, width, in_features]            (NHWC)
//   w, dw: [kernel_h, kernel_w, in_features / groups, out_features]   (HWIO)
//   y, dy: [batch, out_height, out_width, out_features]   (NHWC)
// Activations are handed to oneDNN as they are (format nhwc); the kernel is described by its
// strides and reordered to (or from) the layout the chosen oneDNN kernel wants.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::algorithm;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Everything that defines one convolution: shapes of x and w, strides, pads, dilation, groups.
struct Geometry {
  int64_t batch, height, width, in_features;
  int64_t kernel_h, kernel_w, out_features;
  int64_t out_height, out_width;
  int64_t stride[2], pad_lo[2], pad_hi[2], dilation[2], groups;

  auto key() const {
    return std::make_tuple(batch, height, width, in_features, kernel_h, kernel_w, out_features,
                           stride[0], stride[1], pad_lo[0], pad_lo[1], pad_hi[0], pad_hi[1],
                           dilation[0], dilation[1], groups);
  }

  memory::desc activations(int64_t h, int64_t w, int64_t features) const {
    return memory::desc({batch, features, h, w}, memory::data_type::f32, tag::nhwc);
  }
  memory::desc source() const { return activations(height, width, in_features); }
  memory::desc destination() const { return activations(out_height, out_width, out_features); }

  // oneDNN's kernel dimensions: (O, I, KH, KW), or (G, O/G, I/G, KH, KW) with groups.
  memory::dims kernel_dims() const {
    const int64_t in_group = in_features / groups, out_group = out_features / groups;
    if (groups == 1) return {out_features, in_group, kernel_h, kernel_w};
    return {groups, out_group, in_group, kernel_h, kernel_w};
  }
  // The HWIO buffer described by its strides in those dimensions.
  memory::desc hwio_kernel() const {
    const int64_t in_group = in_features / groups, out_group = out_features / groups;
    const int64_t row = kernel_w * in_group * out_features, column = in_group * out_features;
    memory::dims strides = {1, out_features, row, column};
    if (groups != 1) strides = {out_group, 1, out_features, row, column};
    return memory::desc(kernel_dims(), memory::data_type::f32, strides);
  }
  // Whatever layout the chosen kernel prefers.
  memory::desc any_kernel() const {
    return memory::desc(kernel_dims(), memory::data_type::f32, tag::any);
  }
  memory::dims strides() const { return {stride[0], stride[1]}; }
  memory::dims dilates() const { return {dilation[0] - 1, dilation[1] - 1}; }  // oneDNN: 0 = none
  memory::dims padding_l() const { return {pad_lo[0], pad_lo[1]}; }
  memory::dims padding_r() const { return {pad_hi[0], pad_hi[1]}; }
};

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // one scratchpad per call: thread-safe
  return attr;
}

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, algorithm::convolution_direct, g.source(),
      g.any_kernel(), g.destination(), g.strides(), g.dilates(), g.padding_l(), g.padding_r(),
      UserScratchpad());
}

// The three primitives of one geometry, created once (creating one JIT-compiles a kernel).
struct Primitives {
  dnnl::convolution_forward::primitive_desc forward_desc;
  dnnl::convolution_forward forward;
  dnnl::convolution_backward_data::primitive_desc backward_data_desc;
  dnnl::convolution_backward_data backward_data;
  dnnl::convolution_backward_weights::primitive_desc backward_weights_desc;
  dnnl::convolution_backward_weights backward_weights;

  explicit Primitives(const Geometry& g)
      : forward_desc(ForwardDesc(g)),
        forward(forward_desc),
        backward_data_desc(Engine(), algorithm::convolution_direct, g.source(), g.any_kernel(),
                           g.destination(), g.strides(), g.dilates(), g.padding_l(),
                           g.padding_r(), forward_desc, UserScratchpad()),
        backward_data(backward_data_desc),
        backward_weights_desc(Engine(), algorithm::convolution_direct, g.source(),
                              g.any_kernel(), g.destination(), g.strides(), g.dilates(),
                              g.padding_l(), g.padding_r(), forward_desc, UserScratchpad()),
        backward_weights(backward_weights_desc) {}
};

const Primitives& PrimitivesFor(const Geometry& g) {
  static std::mutex lock;
  static std::map<decltype(g.key()), std::unique_ptr<Primitives>> cache;
  std::lock_guard<std::mutex> guard(lock);
  auto& entry = cache[g.key()];
  if (!entry) entry = std::make_unique<Primitives>(g);
  return *entry;
}

// The user's HWIO kernel in the layout `wanted` by the primitive (reordered on `stream` if needed).
memory KernelAs(const memory::desc& wanted, memory& user_kernel, dnnl::stream& stream) {
  if (wanted == user_kernel.get_desc()) return user_kernel;
  memory kernel(wanted, Engine());
  dnnl::reorder(user_kernel, kernel).execute(stream, user_kernel, kernel);
  return kernel;
}

enum class Pass { kForward, kBackwardData, kBackwardWeights };

// One pass of the convolution described by the buffers' shapes and the attributes. `x`, `w`, `y`
// are the input, kernel and output buffers, or their gradients, as the pass reads or writes them.
template <typename X, typename W, typename Y>
ffi::Error Run(Pass pass, X x, W w, Y y, ffi::Span<const int64_t> strides,
               ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi,
               ffi::Span<const int64_t> dilation, int64_t groups) {
  if (strides.size() != 2 || pad_lo.size() != 2 || pad_hi.size() != 2 || dilation.size() != 2 ||
      x.dimensions().size() != 4 || w.dimensions().size() != 4 || y.dimensions().size() != 4) {
    return ffi::Error::InvalidArgument("onednn conv: 2 spatial dimensions expected");
  }
  Geometry g;
  auto xd = x.dimensions(), wd = w.dimensions(), yd = y.dimensions();
  g.batch = xd[0], g.height = xd[1], g.width = xd[2], g.in_features = xd[3];
  g.kernel_h = wd[0], g.kernel_w = wd[1], g.out_features = wd[3];
  g.out_height = yd[1], g.out_width = yd[2];
  for (int i = 0; i < 2; ++i) {
    g.stride[i] = strides[i], g.pad_lo[i] = pad_lo[i], g.pad_hi[i] = pad_hi[i];
    g.dilation[i] = dilation[i];
  }
  g.groups = groups;
  try {
    const Primitives& p = PrimitivesFor(g);
    // one convolution at a time: each already runs on every core through OpenMP, and XLA would
    // otherwise start independent ones (a layer's two gradients) together, oversubscribing
    static std::mutex running;
    std::lock_guard<std::mutex> one_at_a_time(running);
    memory activations_in(g.source(), Engine(), x.untyped_data());
    memory user_kernel(g.hwio_kernel(), Engine(), w.untyped_data());
    memory activations_out(g.destination(), Engine(), y.untyped_data());
    dnnl::stream stream(Engine());
    // one scratchpad per call (scratchpad_mode::user): concurrent calls never share one
    auto scratchpad_for = [](const dnnl::primitive_desc_base& desc, std::vector<uint8_t>& bytes) {
      bytes.resize(desc.scratchpad_desc().get_size());
      return memory(desc.scratchpad_desc(), Engine(), bytes.data());
    };
    std::vector<uint8_t> bytes;
    switch (pass) {
      case Pass::kForward: {
        memory kernel = KernelAs(p.forward_desc.weights_desc(), user_kernel, stream);
        p.forward.execute(stream, {{DNNL_ARG_SRC, activations_in}, {DNNL_ARG_WEIGHTS, kernel},
                                   {DNNL_ARG_DST, activations_out},
                                   {DNNL_ARG_SCRATCHPAD, scratchpad_for(p.forward_desc, bytes)}});
        break;
      }
      case Pass::kBackwardData: {
        memory kernel = KernelAs(p.backward_data_desc.weights_desc(), user_kernel, stream);
        p.backward_data.execute(
            stream, {{DNNL_ARG_DIFF_DST, activations_out}, {DNNL_ARG_WEIGHTS, kernel},
                     {DNNL_ARG_DIFF_SRC, activations_in},
                     {DNNL_ARG_SCRATCHPAD, scratchpad_for(p.backward_data_desc, bytes)}});
        break;
      }
      case Pass::kBackwardWeights: {
        const memory::desc wanted = p.backward_weights_desc.diff_weights_desc();
        const bool direct = wanted == user_kernel.get_desc();
        memory kernel = direct ? user_kernel : memory(wanted, Engine());
        p.backward_weights.execute(
            stream, {{DNNL_ARG_SRC, activations_in}, {DNNL_ARG_DIFF_DST, activations_out},
                     {DNNL_ARG_DIFF_WEIGHTS, kernel},
                     {DNNL_ARG_SCRATCHPAD, scratchpad_for(p.backward_weights_desc, bytes)}});
        if (!direct) dnnl::reorder(kernel, user_kernel).execute(stream, kernel, user_kernel);
        break;
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                       ffi::ResultBuffer<ffi::F32> y, ffi::Span<const int64_t> strides,
                       ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi,
                       ffi::Span<const int64_t> dilation, int64_t groups) {
  return Run(Pass::kForward, x, w, *y, strides, pad_lo, pad_hi, dilation, groups);
}

ffi::Error BackwardDataImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                            ffi::ResultBuffer<ffi::F32> dx, ffi::Span<const int64_t> strides,
                            ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi,
                            ffi::Span<const int64_t> dilation, int64_t groups) {
  return Run(Pass::kBackwardData, *dx, w, dy, strides, pad_lo, pad_hi, dilation, groups);
}

ffi::Error BackwardWeightsImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                               ffi::ResultBuffer<ffi::F32> dw, ffi::Span<const int64_t> strides,
                               ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi,
                               ffi::Span<const int64_t> dilation, int64_t groups) {
  return Run(Pass::kBackwardWeights, x, *dw, dy, strides, pad_lo, pad_hi, dilation, groups);
}

template <typename Binding>
auto WithGeometry(Binding binding) {
  return std::move(binding)
      .template Attr<ffi::Span<const int64_t>>("strides")
      .template Attr<ffi::Span<const int64_t>>("pad_lo")
      .template Attr<ffi::Span<const int64_t>>("pad_hi")
      .template Attr<ffi::Span<const int64_t>>("dilation")
      .template Attr<int64_t>("groups");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(VisionaxOnednnConvForward, ForwardImpl,
                              WithGeometry(ffi::Ffi::Bind()
                                               .Arg<ffi::Buffer<ffi::F32>>()    // x
                                               .Arg<ffi::Buffer<ffi::F32>>()    // w
                                               .Ret<ffi::Buffer<ffi::F32>>()));  // y

XLA_FFI_DEFINE_HANDLER_SYMBOL(VisionaxOnednnConvBackwardData, BackwardDataImpl,
                              WithGeometry(ffi::Ffi::Bind()
                                               .Arg<ffi::Buffer<ffi::F32>>()    // dy
                                               .Arg<ffi::Buffer<ffi::F32>>()    // w
                                               .Ret<ffi::Buffer<ffi::F32>>()));  // dx

XLA_FFI_DEFINE_HANDLER_SYMBOL(VisionaxOnednnConvBackwardWeights, BackwardWeightsImpl,
                              WithGeometry(ffi::Ffi::Bind()
                                               .Arg<ffi::Buffer<ffi::F32>>()    // x
                                               .Arg<ffi::Buffer<ffi::F32>>()    // dy
                                               .Ret<ffi::Buffer<ffi::F32>>()));  // dw
