// Checkpoints: exact resume on the same layout (bit-identical), resume on other world shapes
// (W=4, ep=4 -> W=2, ep=2 -> W=1) with the one-process losses, and refusals of bad files.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/state_content.h"
#include "parallel/mpi_group.h"
#include "mpi_test_util.h"
#include "runtime/error.h"
#include "test_device.h"
#include "train/trainer.h"
#include "expect_error.h"

namespace moerun::test {
namespace {

namespace fs = std::filesystem;

Config tiny(std::int64_t ep, std::int64_t steps, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> sets = tiny_training_overrides();
  sets.push_back("model.capacity_factor=1.0");
  sets.insert(sets.end(), extra.begin(), extra.end());
  Config c = Config::load(std::nullopt, sets);
  c.train.steps = steps;
  c.parallel.ep = ep;
  return c;
}

std::map<std::string, std::vector<float>> values(Trainer& t) {
  std::map<std::string, std::vector<float>> out;
  for (Parameter* p : t.parameters().all()) out[p->name] = p->value.to_host();
  for (Buffer* b : t.parameters().buffers()) out[b->name] = b->value.to_host();  // the aux-free bias
  return out;
}

// The one-process run of `steps` steps that resumed runs are compared with.
struct Reference {
  std::vector<double> losses;
  std::map<std::string, std::vector<float>> params;
};
Reference one_process_reference(std::int64_t steps, const std::vector<std::string>& extra) {
  LocalGroup alone;
  TestDevice dev;
  Trainer t(tiny(1, steps, extra), alone, dev, "");
  Reference r;
  for (std::int64_t s = 1; s <= steps; ++s) r.losses.push_back(t.train_step(s).loss);
  r.params = values(t);
  return r;
}

}  // namespace

// The checkpoint unit alone, without a model or a Trainer: a description of tensors (one
// dense, one stacked over 4 experts whose rows come from different ranks, one written in row
// pieces as ZeRO-1 moments are) goes in, the file holds the logical tensors, and read_rows
// takes back any rows of them; a shape that differs is refused naming both shapes; a string
// attribute larger than 64 KiB is stored.
TEST(Checkpoint, ContentFromADescriptionOfTensors) {
  auto w = world();
  const int p = w->size(), r = w->rank();
  const std::string dir = shared_dir(*w, "content");
  TestDevice dev;
  auto pattern = [](std::int64_t rows, std::int64_t cols, float base) {
    std::vector<float> v(static_cast<std::size_t>(rows * cols));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = base + static_cast<float>(i);
    return v;
  };
  const Tensor dense = Tensor::from_host(dev, {3, 2}, pattern(3, 2, 0.0f));
  std::vector<Tensor> experts;  // this rank writes experts e with e % p == r
  for (int e = 0; e < 4; ++e) experts.push_back(Tensor::from_host(dev, {2, 3}, pattern(2, 3, 100.0f * float(e + 1))));
  // A [4, 2] tensor written in row pieces: rank q writes rows [q * 4 / p, (q + 1) * 4 / p).
  const std::int64_t first = r * 4 / p, last = (r + 1) * 4 / p;
  const Tensor piece = Tensor::from_host(dev, {last - first, 2}, pattern(last - first, 2, 1000.0f + 2.0f * float(first)));
  ckpt::ContentBuilder b;
  b.declare(ckpt::Root::Model, "head.w", {3, 2});
  b.declare(ckpt::Root::Model, "layers.1.moe.experts.0.w1", {2, 3}, 4);
  b.declare(ckpt::Root::MomentM, "head.w", {3, 2});
  if (r == 0) b.write(ckpt::Root::Model, "head.w", &dense);
  for (int e = 0; e < 4; ++e)
    if (e % p == r) b.write(ckpt::Root::Model, fmt::format("layers.1.moe.experts.{}.w1", e), &experts[static_cast<std::size_t>(e)]);
  // A string attribute past HDF5's 64 KiB compact limit (a fine-grained model's load history).
  std::string big(300 * 1024, 'x');
  for (std::size_t i = 0; i < big.size(); i += 97) big[i] = static_cast<char>('a' + i % 26);
  b.content().string_attributes["load_history"] = big;
  b.declare(ckpt::Root::Model, "norm.gamma", {4, 2});
  if (last > first) b.write(ckpt::Root::Model, "norm.gamma", &piece, first);
  if (r == 0) b.write(ckpt::Root::MomentM, "head.w", &dense);
  const auto* mpi = dynamic_cast<const MpiGroup*>(w.get());
  const std::string path = ckpt::write_checkpoint(*w, mpi != nullptr ? mpi->comm() : MPI_COMM_NULL, dir, 7, b.content(), 2);
  const ckpt::CheckpointReader file(path);
  EXPECT_EQ(file.string_attribute("format"), ckpt::kFormatName);
  EXPECT_EQ(file.string_attribute("load_history"), big);
  EXPECT_EQ(file.shape("/model/layers/1/moe/experts/w1"), (Shape{4, 2, 3}));
  Tensor back(dev, {3, 2});
  ckpt::read_rows(file, ckpt::Root::Model, "head.w", {3, 2}, 0, back);
  EXPECT_EQ(back.to_host(), dense.to_host());
  for (int e = 0; e < 4; ++e) {
    Tensor expert(dev, {2, 3});
    ckpt::read_rows(file, ckpt::Root::Model, fmt::format("layers.1.moe.experts.{}.w1", e), {2, 3}, 4, expert);
    EXPECT_EQ(expert.to_host(), experts[static_cast<std::size_t>(e)].to_host()) << "expert " << e;
  }
  Tensor rows(dev, {2, 2});  // rows 1 and 2 of the piecewise tensor, whoever wrote them
  ckpt::read_rows(file, ckpt::Root::Model, "norm.gamma", {4, 2}, 0, rows, 1);
  EXPECT_EQ(rows.to_host(), pattern(2, 2, 1002.0f));
  expect_error<CheckpointError>([&] { ckpt::read_rows(file, ckpt::Root::Model, "head.w", {2, 3}, 0, back); },
                                {"model shape differs", "/model/head/w", "[3, 2]", "[2, 3]"});
  expect_error<CheckpointError>([&] { ckpt::read_rows(file, ckpt::Root::MomentV, "head.w", {3, 2}, 0, back); },
                                {"has no dataset", "/optimizer/v/head/w"});
}

TEST(Checkpoint, ResumeIsBitIdenticalOnTheSameLayout) {
  auto w = world();
  const std::int64_t ep = w->size() % 2 == 0 ? 2 : 1;
  const std::string dir = shared_dir(*w, "same");
  const Config c = tiny(ep, 8);
  std::vector<double> straight, resumed;
  std::map<std::string, std::vector<float>> p_straight, p_resumed;
  {
    TestDevice dev;
    Trainer t(c, *w, dev, dir);
    for (std::int64_t s = 1; s <= 4; ++s) t.train_step(s);
    t.save_checkpoint(4);
    for (std::int64_t s = 5; s <= 8; ++s) straight.push_back(t.train_step(s).loss);
    p_straight = values(t);
  }
  {
    TestDevice dev;
    Trainer t(c, *w, dev, dir + "_resumed");
    t.restore(dir);
    EXPECT_EQ(t.start_step(), 4);
    for (std::int64_t s = 5; s <= 8; ++s) resumed.push_back(t.train_step(s).loss);
    p_resumed = values(t);
  }
  EXPECT_EQ(straight, resumed);
  ASSERT_EQ(p_straight.size(), p_resumed.size());
  for (const auto& [name, v] : p_straight) {
    ASSERT_EQ(v.size(), p_resumed[name].size()) << name;
    EXPECT_EQ(std::memcmp(v.data(), p_resumed[name].data(), v.size() * sizeof(float)), 0) << name << " differs";
  }
}

static void expect_resume_on_other_world_shapes(const std::vector<std::string>& extra, const std::string& tag) {
  auto w = world();
  const std::string dir_a = shared_dir(*w, "reshape_a" + tag), dir_b = dir_a + "_b";
  LocalGroup alone;
  const auto [reference, p_reference] = one_process_reference(12, extra);
  std::vector<double> losses;
  {  // W = 4, ep = 4, with an adaptive placement (expert 0 replicated) in the checkpoint
    TestDevice dev;
    Config c = tiny(4, 12, extra);
    Trainer t(c, *w, dev, dir_a);
    for (std::int64_t s = 1; s <= 4; ++s) {
      losses.push_back(t.train_step(s).loss);
      if (s == 2) {
        std::vector<std::vector<Replica>> reps = {{{0, 1}, {1, 1}, {2, 1}, {3, 1}}, {{1, 1}}, {{2, 1}}, {{3, 1}}};
        t.apply_placements(std::vector<Placement>(t.placements().size(), Placement(4, reps)));
      }
    }
    t.save_checkpoint(4);
  }
  auto pair = w->split(w->rank() < 2 ? 0 : -1, w->rank(), "pair");
  if (pair) {  // W = 2, ep = 2
    TestDevice dev;
    Trainer t(tiny(2, 12, extra), *pair, dev, dir_b);
    t.restore(dir_a);
    for (std::int64_t s = 5; s <= 8; ++s) losses.push_back(t.train_step(s).loss);
    t.save_checkpoint(8);
  }
  w->barrier();
  if (w->rank() == 0) {  // W = 1
    TestDevice dev;
    Trainer t(tiny(1, 12, extra), alone, dev, "");
    t.restore(dir_b + "/checkpoints");
    for (std::int64_t s = 9; s <= 12; ++s) losses.push_back(t.train_step(s).loss);
    ASSERT_EQ(losses.size(), reference.size());
    for (std::size_t s = 0; s < losses.size(); ++s)
      EXPECT_NEAR(losses[s], reference[s], 1e-5 * std::abs(reference[s])) << "step " << s + 1;
    for (const auto& [name, v] : values(t)) {
      const auto& ref = p_reference.at(name);
      for (std::size_t i = 0; i < v.size(); ++i)
        ASSERT_NEAR(v[i], ref[i], 1e-5 * std::abs(ref[i]) + 1e-6) << name << "[" << i << "]";
    }
  }
}

TEST(Checkpoint, ResumesOnOtherWorldShapesWithTheSameLosses) {
  if (world()->size() != 4) GTEST_SKIP() << "needs 4 ranks (W=4 -> W=2 -> W=1)";
  expect_resume_on_other_world_shapes({}, "");
}

// The aux-free bias is model state: saved, restored on another layout, the same on every rank.
TEST(Checkpoint, DeepSeekBlockResumesOnOtherWorldShapesBiasIncluded) {
  if (world()->size() != 4) GTEST_SKIP() << "needs 4 ranks (W=4 -> W=2 -> W=1)";
  expect_resume_on_other_world_shapes(deepseek_block_overrides(), "_deepseek");
}

// ZeRO-1 leaves the file format alone: sharded moments are written as the logical tensors
// (each rank its rows), so a sharded checkpoint resumes sharded on the same world and unsharded
// on one process, both with the one-process losses and parameters. ep = 2 at 4 ranks shards
// the experts' moments too (over dp = 2).
TEST(Checkpoint, ShardedOptimizerWritesTheLogicalTensors) {
  auto w = world();
  const std::string dir = shared_dir(*w, "zero1");
  const std::int64_t ep = w->size() >= 4 ? 2 : 1;
  LocalGroup alone;
  const auto [reference, p_reference] = one_process_reference(8, {});
  auto expect_reference = [&](const std::vector<double>& losses, Trainer& t) {
    for (std::size_t s = 0; s < losses.size(); ++s)
      EXPECT_NEAR(losses[s], reference[s + 4], 1e-5 * std::abs(reference[s + 4])) << "step " << s + 5;
    for (const auto& [name, v] : values(t)) {
      const auto& ref = p_reference.at(name);
      for (std::size_t i = 0; i < v.size(); ++i)
        ASSERT_NEAR(v[i], ref[i], 1e-5 * std::abs(ref[i]) + 1e-6) << name << "[" << i << "]";
    }
  };
  Config sharded = tiny(ep, 8);
  sharded.train.shard_optimizer = true;
  {
    TestDevice dev;
    Trainer t(sharded, *w, dev, dir);
    for (std::int64_t s = 1; s <= 4; ++s) t.train_step(s);
    t.save_checkpoint(4);
  }
  {  // sharded again, same world
    TestDevice dev;
    Trainer t(sharded, *w, dev, "");
    t.restore(dir + "/checkpoints");
    std::vector<double> losses;
    for (std::int64_t s = 5; s <= 8; ++s) losses.push_back(t.train_step(s).loss);
    expect_reference(losses, t);
  }
  if (w->rank() == 0) {  // one process, unsharded
    TestDevice dev;
    Trainer t(tiny(1, 8), alone, dev, "");
    t.restore(dir + "/checkpoints");
    std::vector<double> losses;
    for (std::int64_t s = 5; s <= 8; ++s) losses.push_back(t.train_step(s).loss);
    expect_reference(losses, t);
  }
  w->barrier();
}

TEST(Checkpoint, BadFilesAreRefusedWithTheReason) {
  auto w = world();
  if (w->size() != 1) GTEST_SKIP() << "file surgery runs on one rank";
  const std::string dir = shared_dir(*w, "bad");
  std::string good;
  {
    TestDevice dev;
    Trainer t(tiny(1, 2), *w, dev, dir);
    t.train_step(1);
    good = t.save_checkpoint(1);
  }
  auto copy = [&](const std::string& name) {
    const std::string p = dir + "/" + name;
    fs::copy_file(good, p, fs::copy_options::overwrite_existing);
    return p;
  };
  auto resume = [&](const std::string& path, const Config& c) {
    TestDevice dev;
    Trainer t(c, *w, dev, "");
    t.restore(path);
  };
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  // A model shape that does not match the config.
  Config wider = tiny(1, 2);
  wider.model.d_ff = 64;
  expect_error<CheckpointError>([&] { resume(good, wider); }, "model shape differs");
  // Fewer layers than the file: its extra layer is refused by name, not dropped.
  Config shallower = tiny(1, 2);
  shallower.model.n_layers = 1;
  expect_error<CheckpointError>([&] { resume(good, shallower); }, {"/model/layers/1/", "which this model does not have"});
  // Another format.
  const std::string other = dir + "/other.h5";
  H5Fclose(H5Fcreate(other.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  expect_error<CheckpointError>([&] { ckpt::CheckpointReader r(other); }, "not a moerun checkpoint");
  // A newer version.
  const std::string newer = copy("newer.h5");
  {
    hid_t f = H5Fopen(newer.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    const std::int64_t v = 99;
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    H5Fclose(f);
  }
  expect_error<CheckpointError>([&] { ckpt::CheckpointReader r(newer); }, "newer");
  // A missing dataset.
  const std::string missing = copy("missing.h5");
  {
    hid_t f = H5Fopen(missing.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "/model/final_norm/gamma", H5P_DEFAULT);
    H5Fclose(f);
  }
  expect_error<CheckpointError>([&] { resume(missing, tiny(1, 2)); }, "has no dataset '/model/final_norm/gamma'");
  // A failed checksum (one value changed behind the writer's back).
  const std::string corrupt = copy("corrupt.h5");
  {
    hid_t f = H5Fopen(corrupt.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/model/layers/0/moe/experts/w1", H5P_DEFAULT);
    hid_t space = H5Dget_space(d);
    const hsize_t start[3] = {1, 0, 0}, count[3] = {1, 1, 1};
    H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, count, nullptr);
    hid_t mem = H5Screate_simple(3, count, nullptr);
    const float x = 123.0f;
    H5Dwrite(d, H5T_NATIVE_FLOAT, mem, space, H5P_DEFAULT, &x);
    H5Sclose(mem);
    H5Sclose(space);
    H5Dclose(d);
    H5Fclose(f);
  }
  expect_error<CheckpointError>([&] { resume(corrupt, tiny(1, 2)); }, "checksum failed");
  // A truncated file.
  const std::string truncated = copy("truncated.h5");
  fs::resize_file(truncated, fs::file_size(truncated) / 2);
  expect_error<CheckpointError>([&] { resume(truncated, tiny(1, 2)); }, "truncated");
  // A directory without a completed checkpoint.
  fs::create_directories(dir + "/empty");
  expect_error<CheckpointError>([&] { resume(dir + "/empty", tiny(1, 2)); }, "no 'latest'");
}

}  // namespace moerun::test
