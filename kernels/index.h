// Row permutations by index: gather, scatter-add (token dispatch and combine inside a
// rank, embedding lookup and its gradient), and the row-wise dot product that gives the
// gradient of a per-row scale.
#pragma once

#include "runtime/kernel_table.h"

namespace moerun::kernels {

void gather_rows(const IndexRowsArgs& args);       // dst[i] = src[index[i]] (* scale[i])
void scatter_add_rows(const IndexRowsArgs& args);  // dst[index[i]] += src[i] (* scale[i])
void row_dot(const RowDotArgs& args);              // out[i] = <a[i], b[i]>

}  // namespace moerun::kernels
