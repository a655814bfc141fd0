// main() for a fuzz target's regression test: runs LLVMFuzzerTestOneInput on
// every file under the corpus directories given as arguments (relative to
// the runfiles root), then on 2000 pseudo-random inputs (fixed seed) and on
// byte-level mutations of each corpus file, so that the normal build and the
// sanitizer builds exercise the target without libFuzzer.
#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

void CollectFiles(const std::string& path, std::vector<std::string>* out) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return;
  if (S_ISREG(st.st_mode)) {
    out->push_back(path);
    return;
  }
  if (!S_ISDIR(st.st_mode)) return;
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return;
  while (dirent* entry = readdir(dir)) {
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    CollectFiles(path + "/" + name, out);
  }
  closedir(dir);
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void Run(const std::vector<uint8_t>& bytes) {
  LLVMFuzzerTestOneInput(bytes.empty() ? nullptr : bytes.data(), bytes.size());
}

}  // namespace

int main(int argc, char** argv) {
  std::string root;
  if (const char* srcdir = std::getenv("TEST_SRCDIR")) {
    const char* workspace = std::getenv("TEST_WORKSPACE");
    root = std::string(srcdir) + "/" + (workspace ? workspace : "qcal") + "/";
  }
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) CollectFiles(root + argv[i], &files);
  if (files.empty()) {
    std::fprintf(stderr, "no corpus files found\n");
    return 1;
  }
  std::mt19937 rng(20261123);
  int64_t runs = 0;
  for (const std::string& file : files) {
    const std::vector<uint8_t> bytes = ReadFile(file);
    Run(bytes);
    ++runs;
    // Mutations: flip, overwrite and truncate at random positions.
    for (int m = 0; m < 200 && !bytes.empty(); ++m) {
      std::vector<uint8_t> mutated = bytes;
      const size_t pos = rng() % mutated.size();
      switch (m % 4) {
        case 0:
          mutated[pos] ^= static_cast<uint8_t>(1u << (rng() % 8));
          break;
        case 1:
          mutated[pos] = static_cast<uint8_t>(rng());
          break;
        case 2:
          mutated.resize(pos);
          break;
        default:
          mutated.insert(mutated.begin() + pos, static_cast<uint8_t>(rng()));
          break;
      }
      Run(mutated);
      ++runs;
    }
  }
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> bytes(rng() % 512);
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
    Run(bytes);
    ++runs;
  }
  std::printf("%zu corpus files, %lld inputs run\n", files.size(),
              static_cast<long long>(runs));
  return 0;
}
