// Tensor and Device contract: allocation tracking, views, moves, copies.
#include "runtime/error.h"
#include "test_util.h"

namespace moerun::test {

TEST(Tensor, TracksCurrentAndPeakBytes) {
  TestDevice dev;
  const auto base = dev->memory_stats();
  {
    Tensor a(dev, {10, 10});
    Tensor b(dev, {5});
    EXPECT_EQ(dev->memory_stats().current_bytes, base.current_bytes + 420);
    EXPECT_EQ(dev->memory_stats().allocations, base.allocations + 2);
  }
  EXPECT_EQ(dev->memory_stats().current_bytes, base.current_bytes);
  EXPECT_GE(dev->memory_stats().peak_bytes, base.current_bytes + 420);
  dev->reset_peak();
  EXPECT_EQ(dev->memory_stats().peak_bytes, dev->memory_stats().current_bytes);
}

TEST(Tensor, AllocationsAreAligned) {
  TestDevice dev;
  for (std::int64_t n : {1, 3, 17, 1000}) {
    Tensor t(dev, {n});
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.data()) % Device::kAlignment, 0u);
  }
}

TEST(Tensor, RowViewsShareStorageAndDoNotOwn) {
  TestDevice dev;
  std::vector<float> v(12);
  for (int i = 0; i < 12; ++i) v[static_cast<std::size_t>(i)] = static_cast<float>(i);
  Tensor t = Tensor::from_host(dev, {4, 3}, v);
  const auto before = dev->memory_stats().allocations;
  Tensor mid = t.rows(1, 3);
  EXPECT_TRUE(mid.is_view());
  EXPECT_EQ(mid.shape(), (Shape{2, 3}));
  EXPECT_EQ(mid.to_host(), (std::vector<float>{3, 4, 5, 6, 7, 8}));
  mid.fill(-1.0f);
  EXPECT_EQ(t.to_host()[3], -1.0f);
  EXPECT_EQ(t.to_host()[9], 9.0f);
  EXPECT_EQ(dev->memory_stats().allocations, before);
  Tensor empty = t.rows(4, 4);
  EXPECT_EQ(empty.numel(), 0);
  EXPECT_THROW(t.rows(2, 5), DeviceError);
  Tensor flat = t.reshaped({12});
  EXPECT_EQ(flat.to_host()[11], 11.0f);
  EXPECT_THROW(t.reshaped({5}), DeviceError);
}

TEST(Tensor, MoveTransfersOwnership) {
  TestDevice dev;
  Tensor a = Tensor::zeros(dev, {3});
  const void* p = a.data();
  Tensor b = std::move(a);
  EXPECT_FALSE(a.defined());  // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_EQ(b.data(), p);
  Tensor c(dev, {1});
  c = std::move(b);
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(c.to_host(), (std::vector<float>{0, 0, 0}));
  EXPECT_THROW((void)a.device(), DeviceError);
}

TEST(Tensor, CopiesAndIndexTensors) {
  TestDevice dev;
  Tensor a = Tensor::from_host(dev, {2, 2}, std::vector<float>{1, 2, 3, 4});
  Tensor b(dev, {2, 2});
  b.copy_from(a);
  EXPECT_EQ(b.to_host(), a.to_host());
  Tensor wrong(dev, {4});
  EXPECT_THROW(wrong.copy_from(a), DeviceError);
  Tensor idx = Tensor::from_host(dev, {3}, std::vector<std::int32_t>{5, -1, 7});
  EXPECT_EQ(idx.dtype(), DType::I32);
  EXPECT_EQ(idx.to_host_i32(), (std::vector<std::int32_t>{5, -1, 7}));
  EXPECT_THROW((void)idx.to_host(), DeviceError);
  EXPECT_THROW(Tensor(dev, {-1}), DeviceError);
}

}  // namespace moerun::test
