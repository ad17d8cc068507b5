// Render a chat template with google/minja, the engine of llama.cpp builds before PR #18462,
// for the live cross-check in tests/test_templates.py. Build: build_minja_render.sh
//   minja_render TEMPLATE_FILE CONTEXT_JSON_FILE  ->  stdout: the text; exit 1 + stderr: error
// Options as minja's chat-template.hpp parses chat templates (trim_blocks, lstrip_blocks);
// no message polyfills: the template sees the context as given.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <minja/minja.hpp>

using json = nlohmann::ordered_json;

static std::string slurp(const char * path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

int main(int argc, char ** argv) {
    if (argc != 3) {
        std::cerr << "usage: minja_render TEMPLATE CONTEXT.json\n";
        return 2;
    }
    try {
        auto root = minja::Parser::parse(slurp(argv[1]), {
            /* .trim_blocks = */ true,
            /* .lstrip_blocks = */ true,
            /* .keep_trailing_newline = */ false,
        });
        auto context = minja::Context::make(minja::Value(json::parse(slurp(argv[2]))));
        std::cout << root->render(context);
        return 0;
    } catch (const std::exception & e) {
        std::cerr << e.what() << "\n";
        return 1;
    }
}
