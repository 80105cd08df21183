// expect_error<E>(fn, fragments): fn must throw E, and E's message must contain every fragment.
// Bad-input tests use it to hold the "clear error that names the problem" promise.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

namespace moerun::test {

template <class E, class Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected an exception of the expected error type";
  } catch (const E& e) {
    for (const auto& f : fragments)
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what() << "\n  lacks: " << f;
  }
}

template <class E, class Fn>
void expect_error(Fn&& fn, const std::string& fragment) {
  expect_error<E>(std::forward<Fn>(fn), {fragment});
}

}  // namespace moerun::test
