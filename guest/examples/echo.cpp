// echo: returns its input unchanged, as a string or as bytes.
#include <sandpool/guest.hpp>

namespace {

sandpool::str echo(sandpool::str text) { return text; }
sandpool::bytes echo_bytes(sandpool::bytes data) { return data; }
void nothing() {}

}  // namespace

void sandpool_main() {
  sandpool::export_function<echo>("echo");
  sandpool::export_function<echo_bytes>("echo_bytes");
  sandpool::export_function<nothing>("nothing");
}
