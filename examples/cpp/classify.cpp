// classify MODEL INPUT.bin: the same as the C example with the C++ header.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <vector>

#include <nasrt/nasrt.hpp>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " MODEL.nasrt INPUT.bin\n";
    return 2;
  }
  try {
    nasrt::Model model(argv[1]);
    std::vector<float> x(model.input_size());
    std::ifstream f(argv[2], std::ios::binary);
    if (!f.read(reinterpret_cast<char*>(x.data()), x.size() * sizeof(float))) {
      std::cerr << argv[2] << ": too short for one sample\n";
      return 1;
    }
    const std::vector<float> logits = model.run(x.data());
    const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
    std::cout << "class " << best << " (logit " << logits[best] << ") on " << model.threads()
              << " thread(s); kernels:";
    for (const auto& [conv, backend] : model.kernels()) std::cout << ' ' << conv << '=' << backend;
    std::cout << '\n';
  } catch (const std::exception& e) {
    std::cerr << e.what() << '\n';
    return 1;
  }
  return 0;
}
