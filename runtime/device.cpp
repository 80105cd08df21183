#include "runtime/device.h"

#include <algorithm>

#include "runtime/error.h"

namespace moerun {

void* Device::allocate(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = do_allocate(bytes);
  MOERUN_CHECK(p != nullptr, DeviceError,
               "[{}] allocate: out of memory for {} bytes ({} bytes already in use); reduce "
               "train.micro_batch or the model size",
               name(), bytes, stats_.current_bytes);
  stats_.current_bytes += bytes;
  stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.current_bytes);
  ++stats_.allocations;
  return p;
}

void Device::deallocate(void* ptr, std::size_t bytes) {
  if (ptr == nullptr) return;
  do_deallocate(ptr, bytes);
  stats_.current_bytes -= bytes;
  --stats_.allocations;
}

void Device::count_transfer(CopyKind kind, std::size_t bytes) {
  if (kind == CopyKind::DeviceToHost) {
    ++transfers_.device_to_host_copies;
    transfers_.device_to_host_bytes += static_cast<std::int64_t>(bytes);
  } else if (kind == CopyKind::HostToDevice) {
    ++transfers_.host_to_device_copies;
    transfers_.host_to_device_bytes += static_cast<std::int64_t>(bytes);
  }
}

TransferStats Device::take_transfer_stats() {
  const TransferStats taken = transfers_;
  transfers_ = {};
  return taken;
}

void Device::copy_host_to_device(void* dst, const void* host_src, std::size_t bytes) {
  if (bytes == 0) return;
  count_transfer(CopyKind::HostToDevice, bytes);
  do_copy(dst, host_src, bytes, CopyKind::HostToDevice);
}
void Device::copy_device_to_host(void* host_dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  count_transfer(CopyKind::DeviceToHost, bytes);
  ++transfers_.host_reads;
  do_copy(host_dst, src, bytes, CopyKind::DeviceToHost);
}
void Device::copy_device_to_host_async(Queue queue, void* host_dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  count_transfer(CopyKind::DeviceToHost, bytes);
  do_copy_async(queue, host_dst, src, bytes, CopyKind::DeviceToHost);
}
void Device::copy_host_to_device_async(Queue queue, void* dst, const void* host_src, std::size_t bytes) {
  if (bytes == 0) return;
  count_transfer(CopyKind::HostToDevice, bytes);
  do_copy_async(queue, dst, host_src, bytes, CopyKind::HostToDevice);
}
void Device::copy_device_to_device(void* dst, const void* src, std::size_t bytes) {
  if (bytes != 0) do_copy(dst, src, bytes, CopyKind::DeviceToDevice);
}
void Device::fill32(void* dst, std::uint32_t word, std::size_t count) {
  if (count != 0) do_fill32(dst, word, count);
}

}  // namespace moerun
