// A small consumer of device arrays for the bindings: DLPack (the versioned capsule first,
// then the legacy one) or __cuda_array_interface__. pybind11 has no DLPack caster, and the
// extension does not link against torch: device memory crosses the boundary as a pointer,
// checked here for dtype, shape, contiguity, device and writability.
//
// DLPack rules followed: the capsule is renamed to "used_dltensor[_versioned]" once consumed
// and its deleter is called when the ArrayRef goes away; the read-only flag is honoured; NULL
// strides mean row-major; byte_offset is added to the data pointer. The consumer stream is
// passed to __dlpack__(stream=...) so the producer orders its pending work before it.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace apportion {
namespace dlpack {

namespace py = pybind11;

// The DLPack ABI (dlpack.h 1.x), as much of it as a consumer reads.
struct DLDevice {
  std::int32_t device_type;
  std::int32_t device_id;
};
struct DLDataType {
  std::uint8_t code;
  std::uint8_t bits;
  std::uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  std::int32_t ndim;
  DLDataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;
  std::uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
struct DLPackVersion {
  std::uint32_t major;
  std::uint32_t minor;
};
struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned*);
  std::uint64_t flags;
  DLTensor dl_tensor;
};
constexpr std::uint64_t kFlagReadOnly = 1;
constexpr std::int32_t kDLCUDA = 2, kDLCUDAManaged = 13;
constexpr std::uint8_t kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBool = 6;

// One array read from Python: data pointer, shape, element kind ('f', 'i', 'u', 'b') and
// size. Owns the DLPack capsule's tensor until destroyed (destroy it with the GIL held).
class ArrayRef {
 public:
  // `stream`: the consumer's CUDA stream (0: the legacy default stream). `writable`: the
  // solver writes into it (a read-only producer is refused).
  ArrayRef(py::handle obj, const std::string& name, std::uintptr_t stream, bool writable) : name_(name) {
    try {
      if (py::hasattr(obj, "__dlpack__")) {
        from_dlpack(obj, stream);
      } else if (py::hasattr(obj, "__cuda_array_interface__")) {
        from_cai(obj);
      } else {
        fail("expected a CUDA array (exposing __dlpack__ or __cuda_array_interface__)");
      }
      if (writable && read_only_) fail("the array is read-only; the solver writes its output there");
    } catch (...) {
      release();  // a consumed capsule is ours to delete even when it is refused
      throw;
    }
  }
  ~ArrayRef() { release(); }
  ArrayRef(const ArrayRef&) = delete;
  ArrayRef& operator=(const ArrayRef&) = delete;

  void* data() const { return data_; }
  const std::vector<std::int64_t>& shape() const { return shape_; }
  std::int64_t dim(int i) const { return shape_[i]; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  // The CUDA device of the array, or -1 when the producer does not say (CAI).
  int device() const { return device_; }
  bool is(char kind, int bytes) const { return kind_ == kind && bytes_ == bytes; }
  const std::string& name() const { return name_; }

  [[noreturn]] void fail(const std::string& why) const { throw std::invalid_argument(name_ + ": " + why); }
  void require(bool ok, const std::string& why) const {
    if (!ok) fail(why);
  }
  void require_shape(const std::vector<std::int64_t>& expected) const {
    if (shape_ != expected) {
      std::string s = "(";
      for (std::size_t i = 0; i < expected.size(); ++i) s += (i ? "," : "") + std::to_string(expected[i]);
      fail("expected shape " + s + (expected.size() == 1 ? ",)" : ")"));
    }
  }

 private:
  void from_dlpack(py::handle obj, std::uintptr_t stream) {
    py::tuple dev = obj.attr("__dlpack_device__")();
    const int type = dev[0].cast<int>();
    if (type != kDLCUDA && type != kDLCUDAManaged) fail("expected an array on a CUDA device");
    // DLPack: stream 0 is ambiguous; 1 names the legacy default stream.
    const std::uintptr_t consumer = stream == 0 ? 1 : stream;
    py::object capsule;
    try {
      capsule = obj.attr("__dlpack__")(py::arg("stream") = consumer,
                                      py::arg("max_version") = py::make_tuple(1, 0));
    } catch (py::error_already_set& e) {
      if (!e.matches(PyExc_TypeError)) throw;
      capsule = obj.attr("__dlpack__")(py::arg("stream") = consumer);
    }
    PyObject* cap = capsule.ptr();
    const DLTensor* t = nullptr;
    if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
      versioned_ = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, "dltensor_versioned"));
      if (PyCapsule_SetName(cap, "used_dltensor_versioned") != 0) throw py::error_already_set();
      if (versioned_->version.major > 1) fail("DLPack major version above 1 is not supported");
      read_only_ = (versioned_->flags & kFlagReadOnly) != 0;
      t = &versioned_->dl_tensor;
    } else if (PyCapsule_IsValid(cap, "dltensor")) {
      legacy_ = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
      if (PyCapsule_SetName(cap, "used_dltensor") != 0) throw py::error_already_set();
      t = &legacy_->dl_tensor;
    } else {
      fail("__dlpack__ returned no DLPack capsule");
    }
    device_ = t->device.device_id;
    if (t->dtype.lanes != 1) fail("vector dtypes are not supported");
    switch (t->dtype.code) {
      case kDLFloat: kind_ = 'f'; break;
      case kDLInt: kind_ = 'i'; break;
      case kDLUInt: kind_ = 'u'; break;
      case kDLBool: kind_ = 'b'; break;
      default: fail("unsupported dtype");
    }
    bytes_ = t->dtype.bits / 8;
    shape_.assign(t->shape, t->shape + t->ndim);
    std::vector<std::int64_t> strides;
    if (t->strides) strides.assign(t->strides, t->strides + t->ndim);  // in elements
    check_row_major(strides, 1);
    data_ = static_cast<char*>(t->data) + t->byte_offset;
  }

  void from_cai(py::handle obj) {
    py::dict cai = obj.attr("__cuda_array_interface__");
    py::tuple ptr = cai["data"];
    data_ = reinterpret_cast<void*>(ptr[0].cast<std::uintptr_t>());
    read_only_ = ptr[1].cast<bool>();
    if (cai.contains("mask") && !cai["mask"].is_none()) fail("masked __cuda_array_interface__ arrays are not supported");
    const std::string typestr = cai["typestr"].cast<std::string>();
    if (typestr.size() < 3 || typestr[0] == '>') fail("unsupported dtype " + typestr);
    kind_ = typestr[1];
    bytes_ = std::stoi(typestr.substr(2));
    for (auto d : py::tuple(cai["shape"])) shape_.push_back(d.cast<std::int64_t>());
    std::vector<std::int64_t> strides;
    if (cai.contains("strides") && !cai["strides"].is_none()) {
      for (auto s : py::tuple(cai["strides"])) strides.push_back(s.cast<std::int64_t>());  // in bytes
    }
    check_row_major(strides, bytes_);
  }

  // Strides (empty: row-major) must describe a C-contiguous array; size-1 axes are free.
  void check_row_major(const std::vector<std::int64_t>& strides, std::int64_t unit) const {
    if (strides.empty()) return;
    std::int64_t expected = unit;
    for (int i = static_cast<int>(shape_.size()) - 1; i >= 0; --i) {
      if (shape_[i] != 1 && strides[i] != expected) {
        fail("expected a C-contiguous array (internal error in the Python layer)");
      }
      expected *= shape_[i];
    }
  }

  void release() {
    if (versioned_ && versioned_->deleter) versioned_->deleter(versioned_);
    if (legacy_ && legacy_->deleter) legacy_->deleter(legacy_);
    versioned_ = nullptr;
    legacy_ = nullptr;
  }

  std::string name_;
  DLManagedTensorVersioned* versioned_ = nullptr;
  DLManagedTensor* legacy_ = nullptr;
  void* data_ = nullptr;
  std::vector<std::int64_t> shape_;
  char kind_ = '?';
  int bytes_ = 0;
  int device_ = -1;
  bool read_only_ = false;
};

}  // namespace dlpack
}  // namespace apportion
