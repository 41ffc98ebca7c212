// add: arithmetic over every numeric type of the ABI.
#include <sandpool/guest.hpp>

namespace {

int32_t add(int32_t a, int32_t b) { return a + b; }
int64_t add_i64(int64_t a, int64_t b) { return a + b; }
uint32_t add_u32(uint32_t a, uint32_t b) { return a + b; }
uint64_t add_u64(uint64_t a, uint64_t b) { return a + b; }
float add_f32(float a, float b) { return a + b; }
double add_f64(double a, double b) { return a + b; }
bool both(bool a, bool b) { return a && b; }

}  // namespace

void sandpool_main() {
  sandpool::export_function<add>("add");
  sandpool::export_function<add_i64>("add_i64");
  sandpool::export_function<add_u32>("add_u32");
  sandpool::export_function<add_u64>("add_u64");
  sandpool::export_function<add_f32>("add_f32");
  sandpool::export_function<add_f64>("add_f64");
  sandpool::export_function<both>("both");
}
