// The strict test backend (runtime/strict/strict_device.h) and the asynchronous device contract
// it enforces: memory the host cannot touch, copies that run only when something waits for
// them, events that order two queues, and shape signatures that freeze after warm-up. The CPU
// backend runs the same contract eagerly; the last test checks that too.
#include <gtest/gtest.h>

#include <vector>

#include "expect_error.h"
#include "kernels/elementwise.h"
#include "runtime/device_registry.h"
#include "runtime/error.h"
#include "runtime/tensor.h"

namespace moerun {
namespace {

std::unique_ptr<Device> strict() { return make_device("strict"); }

TEST(StrictDevice, HostCodeThatReadsDeviceMemoryDiesNamingTheCause) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto dev = strict();
        Tensor t = Tensor::zeros(*dev, {4, 4});
        volatile float x = *static_cast<const float*>(t.data());  // what host code must never do
        (void)x;
      },
      "host code touched strict device memory");
}

TEST(StrictDevice, StagesCommunicationAndReadsOnlyThroughCopies) {
  auto dev = strict();
  EXPECT_FALSE(dev->host_accessible());
  Tensor t = Tensor::from_host(*dev, {2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6});
  kernels::scale(t, 2.0f);
  EXPECT_EQ(t.to_host(), (std::vector<float>{2, 4, 6, 8, 10, 12}));
  t.fill(0.5f);
  EXPECT_EQ(t.to_host(), std::vector<float>(6, 0.5f));
  const TransferStats copies = dev->take_transfer_stats();
  EXPECT_EQ(copies.host_to_device_copies, 1);
  EXPECT_EQ(copies.device_to_host_copies, 2);
  EXPECT_EQ(copies.host_reads, 2);  // both synchronous: the host waited for each
  EXPECT_EQ(copies.device_to_host_bytes, 2 * 6 * 4);
  EXPECT_EQ(dev->take_transfer_stats().device_to_host_copies, 0);
}

TEST(StrictDevice, AnAsyncCopyLandsOnlyWhenItsEventIsWaitedFor) {
  auto dev = strict();
  Tensor t = Tensor::from_host(*dev, {4}, std::vector<float>{1, 2, 3, 4});
  std::vector<float> host(4, -1.0f);
  dev->copy_device_to_host_async(Queue::Transfer, host.data(), t.data(), t.bytes());
  const Event done = dev->record_event(Queue::Transfer);
  EXPECT_FALSE(dev->query(done));
  EXPECT_EQ(host, std::vector<float>(4, -1.0f)) << "the copy ran before anything waited for it";
  dev->host_wait(done);
  EXPECT_TRUE(dev->query(done));
  EXPECT_EQ(host, (std::vector<float>{1, 2, 3, 4}));
  const TransferStats copies = dev->take_transfer_stats();
  EXPECT_EQ(copies.device_to_host_copies, 1);
  EXPECT_EQ(copies.host_reads, 0) << "an asynchronous copy is staging, not a read that stops the host";
}

TEST(StrictDevice, EventsOrderWorkAcrossQueues) {
  auto dev = strict();
  for (const bool compute_waits : {true, false}) {
    Tensor t = Tensor::from_host(*dev, {3}, std::vector<float>{1, 1, 1});
    const std::vector<float> incoming{5, 6, 7};
    dev->copy_host_to_device_async(Queue::Transfer, t.data(), incoming.data(), t.bytes());
    const Event arrived = dev->record_event(Queue::Transfer);
    if (compute_waits) dev->queue_wait(Queue::Compute, arrived);
    kernels::scale(t, 10.0f);  // runs on Compute
    const std::vector<float> after_kernel = t.to_host();
    dev->host_wait(arrived);
    if (compute_waits) {
      EXPECT_EQ(after_kernel, (std::vector<float>{50, 60, 70})) << "the kernel ran before the copy it waited for";
    } else {
      // Without the wait the kernel is free to run first: the strict backend lets it.
      EXPECT_EQ(after_kernel, (std::vector<float>{10, 10, 10}));
    }
  }
}

TEST(StrictDevice, ANewShapeAfterWarmUpFailsNamingTheKernel) {
  auto dev = strict();
  dev->expect_static_shapes(1);
  Tensor a = Tensor::zeros(*dev, {2, 3});
  dev->begin_step();
  kernels::scale(a, 2.0f);  // step 1: warm-up, any shape compiles
  dev->end_step();
  const std::int64_t seen = dev->shape_signatures();
  EXPECT_GE(seen, 1);
  Tensor b = Tensor::zeros(*dev, {4, 3});
  kernels::scale(b, 1.0f);  // between steps (evaluation, say): a graph of its own, allowed
  EXPECT_EQ(dev->shape_signatures(), seen + 1);
  Tensor c = Tensor::zeros(*dev, {5, 3});
  dev->begin_step();
  kernels::scale(a, 3.0f);  // a signature seen before: fine
  test::expect_error<DeviceError>([&] { kernels::scale(c, 2.0f); }, {"scale f32[5, 3]", "would recompile"});
  EXPECT_EQ(dev->shape_signatures(), seen + 1);
  dev->end_step();
}

TEST(StrictDevice, DynamicShapesAreRecordedButAllowedUntilDeclaredStatic) {
  auto dev = strict();
  for (std::int64_t n = 1; n <= 3; ++n) {
    Tensor t = Tensor::zeros(*dev, {n, 2});
    dev->begin_step();
    kernels::scale(t, 2.0f);
    dev->end_step();
  }
  EXPECT_EQ(dev->shape_signatures(), 3);
}

TEST(CpuDevice, RunsTheAsyncContractEagerly) {
  auto dev = make_device("cpu");
  Tensor t = Tensor::from_host(*dev, {2}, std::vector<float>{3, 4});
  std::vector<float> host(2, 0.0f);
  dev->copy_device_to_host_async(Queue::Transfer, host.data(), t.data(), t.bytes());
  const Event e = dev->record_event(Queue::Transfer);
  EXPECT_TRUE(dev->query(e));
  dev->host_wait(e);
  EXPECT_EQ(host, (std::vector<float>{3, 4}));
}

}  // namespace
}  // namespace moerun
