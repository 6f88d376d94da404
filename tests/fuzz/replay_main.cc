// Copyright sessiond authors. Licensed under the Apache License 2.0.
//
// The main of a fuzz target in the ordinary (GCC) build, where libFuzzer is
// not linked: every input of the checked-in corpus once, then a bounded
// blind mutation loop (bit flips, byte edits, cuts, splices of corpus
// inputs; no coverage feedback) for at most --iterations inputs and
// --seconds. CI runs this; coverage-guided fuzzing with libFuzzer and ASan
// is tools/fuzz.sh NAME SECONDS.
//
// A crash (a signal) writes the input being tried to ./fuzz-crash-<pid>
// (async-signal-safe calls only) and dies with the signal; a target that
// finds a bug aborts. Add the file to the corpus once the bug is fixed: it
// then stays a regression test.
#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

// The input being tried, for the crash handler.
const std::string* g_current = nullptr;

void OnCrash(int signal) {
  if (g_current != nullptr) {
    char name[64];
    std::snprintf(name, sizeof name, "fuzz-crash-%d",
                  static_cast<int>(getpid()));
    const int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      const char* p = g_current->data();
      size_t left = g_current->size();
      while (left > 0) {
        const ssize_t n = write(fd, p, left);
        if (n <= 0) break;
        p += n;
        left -= static_cast<size_t>(n);
      }
      close(fd);
    }
    static const char kSaid[] =
        "fuzz: crashed; the input is in ./fuzz-crash-PID\n";
    [[maybe_unused]] ssize_t ignored = write(2, kSaid, sizeof kSaid - 1);
  }
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

void Run(const std::string& input) {
  g_current = &input;
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()),
                         input.size());
  g_current = nullptr;
}

std::string Mutate(std::string s, const std::vector<std::string>& corpus,
                   std::mt19937_64& rng) {
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const size_t n = s.size();
    switch (rng() % 8) {
      case 0:  // flip a bit
        if (n > 0) s[rng() % n] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:  // set a byte, often to an edge value
        if (n > 0) {
          static constexpr char kEdges[] = {'\0', '\x7f', '\x80', '\xff',
                                            '"',  '.',    '=',    '\n'};
          s[rng() % n] = rng() % 2 ? kEdges[rng() % sizeof kEdges]
                                   : static_cast<char>(rng());
        }
        break;
      case 2:  // insert a byte
        s.insert(s.begin() + static_cast<long>(n == 0 ? 0 : rng() % (n + 1)),
                 static_cast<char>(rng()));
        break;
      case 3:  // delete a run
        if (n > 0) {
          const size_t at = rng() % n;
          s.erase(at, 1 + rng() % std::min<size_t>(8, n - at));
        }
        break;
      case 4:  // truncate
        if (n > 0) s.resize(rng() % n);
        break;
      case 5:  // duplicate a slice
        if (n > 0 && n < 1 << 16) {
          const size_t at = rng() % n;
          const size_t len = 1 + rng() % std::min<size_t>(32, n - at);
          s.insert(rng() % (n + 1), s.substr(at, len));
        }
        break;
      case 6:  // splice with another corpus input
        if (!corpus.empty()) {
          const std::string& other = corpus[rng() % corpus.size()];
          s = s.substr(0, n == 0 ? 0 : rng() % (n + 1)) +
              other.substr(other.empty() ? 0 : rng() % other.size());
        }
        break;
      default:  // a random varint-ish run
        for (int i = 0; i < 1 + static_cast<int>(rng() % 3); ++i) {
          s.insert(s.begin() + static_cast<long>(n == 0 ? 0 : rng() % (n + 1)),
                   static_cast<char>(0x80 | (rng() & 0x7f)));
        }
        break;
    }
  }
  if (s.size() > (1 << 20)) s.resize(1 << 20);
  return s;
}

int Usage() {
  std::fprintf(stderr,
               "usage: fuzz_NAME [--iterations N] [--seconds S] [--seed N] "
               "CORPUS_DIR_OR_FILE...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t iterations = 0;
  double seconds = 0;
  uint64_t seed = 1;
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--iterations" || arg == "--seconds" || arg == "--seed") &&
        i + 1 < argc) {
      const std::string value = argv[++i];
      const bool ok =
          arg == "--seconds"
              ? absl::SimpleAtod(value, &seconds)
              : absl::SimpleAtoi(value, arg == "--seed" ? &seed : &iterations);
      if (!ok) return Usage();
      continue;
    }
    if (arg.rfind("--", 0) == 0) return Usage();
    if (std::filesystem::is_directory(arg)) {
      for (const auto& f : std::filesystem::directory_iterator(arg)) {
        if (f.is_regular_file()) inputs.push_back(f.path().string());
      }
    } else {
      inputs.push_back(arg);
    }
  }
  for (int s : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) {
    std::signal(s, OnCrash);
  }
  std::vector<std::string> corpus;
  for (const std::string& path : inputs) {
    std::ifstream in(path, std::ios::binary);
    corpus.emplace_back(std::istreambuf_iterator<char>(in),
                        std::istreambuf_iterator<char>());
    Run(corpus.back());
  }
  Run("");
  std::mt19937_64 rng(seed);
  const absl::Time until = absl::Now() + absl::Seconds(seconds);
  uint64_t done = 0;
  for (; done < iterations && absl::Now() < until; ++done) {
    const std::string base =
        corpus.empty() ? std::string() : corpus[rng() % corpus.size()];
    Run(Mutate(base, corpus, rng));
  }
  std::printf("fuzz: %zu corpus inputs, %llu mutations (seed %llu), no crash\n",
              corpus.size(), static_cast<unsigned long long>(done),
              static_cast<unsigned long long>(seed));
  return 0;
}
